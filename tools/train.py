#!/usr/bin/env python
"""Train any registered method (collab_distill/methods/registry.py), chosen by method.name in the config:
teacher_pretrain, teacher_ssl, stage1, stage2, and the image-only baselines teacher_plus, asymmetric, self_distill.
tools/train_teacher.py, train_stage1.py, train_stage2.py and train_baseline.py are aliases that run
one group of them and know its default config."""
from collab_distill.threads import set_thread_defaults; set_thread_defaults()  # noqa: E702 (before torch loads)
from collab_distill.cli import train_main

if __name__ == "__main__":
    train_main(__doc__, "train.py")
