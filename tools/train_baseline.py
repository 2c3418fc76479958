#!/usr/bin/env python
"""Image-only baselines: asymmetric, self_distill or teacher_plus, chosen by method.name."""
from collab_distill.threads import set_thread_defaults; set_thread_defaults()  # noqa: E702 (before torch loads)
from collab_distill.cli import train_main

if __name__ == "__main__":
    train_main(__doc__, "train_baseline.py", "configs/baselines/asymmetric.yaml", {"asymmetric", "self_distill", "teacher_plus"})
