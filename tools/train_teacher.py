#!/usr/bin/env python
"""The clear-weather ViT teacher, when no pretrained DINOv2 weights are available: teacher_pretrain
(the default config; supervised by the projected LiDAR's 16-class labels and depth, what tools/demo.py
trains first) or teacher_ssl (--config configs/teacher/ssl.yaml: label-free self-distillation on clear
images, no LiDAR; docs/methods.md).

An alias of tools/train.py for the registry's teacher group (collab_distill/methods/registry.py)."""
from collab_distill.threads import set_thread_defaults; set_thread_defaults()  # noqa: E702 (before torch loads)
from collab_distill.cli import train_main

if __name__ == "__main__":
    train_main(__doc__, "train_teacher.py", group="teacher")
