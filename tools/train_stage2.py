#!/usr/bin/env python
"""Stage 2: distil the aligned, frozen LiDAR features into a 2D student on all conditions.

An alias of tools/train.py for the registry's stage2 group (collab_distill/methods/registry.py)."""
from collab_distill.threads import set_thread_defaults; set_thread_defaults()  # noqa: E702 (before torch loads)
from collab_distill.cli import train_main

if __name__ == "__main__":
    train_main(__doc__, "train_stage2.py", group="stage2")
