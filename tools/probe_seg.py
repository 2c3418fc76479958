#!/usr/bin/env python
"""Linear semantic-segmentation probe (DINOv2 "linear": BatchNorm + 1x1 conv on the frozen encoder's
last-block tokens after the final norm; "+ms": last 4 blocks) with per-condition mIoU on val.
Ground truth: lidarseg points projected into the images, 16 evaluation classes (docs/probes.md)."""
from collab_distill.threads import set_thread_defaults; set_thread_defaults()  # noqa: E702 (before torch loads)
from collab_distill.cli import probe_main

if __name__ == "__main__":
    probe_main(__doc__, "probe_seg.py", "seg", "configs/probe/seg_linear.yaml")
