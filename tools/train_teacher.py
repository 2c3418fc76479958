#!/usr/bin/env python
"""The clear-weather ViT teacher (teacher_pretrain): supervised by the projected LiDAR, 16-class labels
and depth, when no pretrained DINOv2 weights are available (what tools/demo.py trains first).

An alias of tools/train.py for the registry's teacher group (collab_distill/methods/registry.py)."""
from collab_distill.threads import set_thread_defaults; set_thread_defaults()  # noqa: E702 (before torch loads)
from collab_distill.cli import train_main

if __name__ == "__main__":
    train_main(__doc__, "train_teacher.py", group="teacher")
