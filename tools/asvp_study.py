#!/usr/bin/env python
"""The ASVP study: does Adaptive Singular Value Perturbation stop an attacker from distilling a teacher?

Restoration part: per task (fog -> clear dehazing, rain -> clear deraining, night -> clear low-light
enhancement) a compact UNet teacher is trained on synthetic paired renders, then a smaller student is
distilled (output + feature matching) from the undefended teacher and from the ASVP-defended teacher
with the perturbation inside the forward pass ("inline") and on the exposed features only
("exposed"); PSNR/SSIM of all of them on a held-out scene. Encoder part: the same defense on a ViT
encoder, scored with the linear segmentation probe. See docs/asvp.md.

Examples:
  python tools/asvp_study.py                                   # configs/asvp/study.yaml (~6-9 min, 1 core)
  python tools/asvp_study.py configs/asvp/study.yaml parts=[restoration] restoration.asvp.h=4
  python tools/asvp_study.py configs/asvp/study.yaml restoration.tasks=[fog] restoration.student.steps=20

Writes <experiment.output_dir>/asvp_study.{json,md}; the data set is generated into
<experiment.output_dir>/data on first use (about a minute) unless data_root points to one.
"""
from __future__ import annotations

import argparse
import sys

from collab_distill.cli import add_config_args, config_from_args, setup_logging
from collab_distill.defense.study import ASVPStudyConfig, run_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, default="configs/asvp/study.yaml")
    args = parser.parse_args()
    setup_logging()
    try:
        cfg = config_from_args(args, ASVPStudyConfig)
    except ValueError as exc:                      # ASVPConfig's own checks (h, k, energy, solver)
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    result = run_study(cfg, sys.argv)
    print(f"ASVP study done in {result['seconds']['total']:.0f} s: {cfg.experiment.output_dir}/asvp_study.md")


if __name__ == "__main__":
    main()
