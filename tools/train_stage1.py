#!/usr/bin/env python
"""Stage 1: align the sparse-conv LiDAR encoder to the frozen clear-weather ViT teacher.

An alias of tools/train.py for the registry's stage1 group (collab_distill/methods/registry.py)."""
from collab_distill.threads import set_thread_defaults; set_thread_defaults()  # noqa: E702 (before torch loads)
from collab_distill.cli import train_main

if __name__ == "__main__":
    train_main(__doc__, "train_stage1.py", group="stage1")
