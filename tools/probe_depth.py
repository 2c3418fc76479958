#!/usr/bin/env python
"""Linear depth probe (DINOv2 "lin.1": last block without the final norm, CLS concatenated, x4
upsampling, 1x1 conv to 256 uniform bins, linear normalisation, expectation; SigLoss + 0.5 x gradient
loss) with per-condition RMSE, AbsRel and delta1-3 on val. Ground truth: projected LiDAR depth."""
from collab_distill.threads import set_thread_defaults; set_thread_defaults()  # noqa: E702 (before torch loads)
from collab_distill.cli import probe_main

if __name__ == "__main__":
    probe_main(__doc__, "probe_depth.py", "depth", "configs/probe/depth_linear.yaml")
