#!/usr/bin/env python
"""Stage 1: align the sparse-conv LiDAR encoder to the frozen clear-weather ViT teacher."""
from collab_distill.threads import set_thread_defaults; set_thread_defaults()  # noqa: E702 (before torch loads)
from collab_distill.cli import train_main

if __name__ == "__main__":
    train_main(__doc__, "train_stage1.py", "configs/stage1/synthetic.yaml", {"stage1"})
