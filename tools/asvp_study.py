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
  python tools/asvp_study.py parts=[restoration] restoration.asvp.h=4
  python tools/asvp_study.py --config my_study.yaml restoration.tasks=[fog] restoration.student.steps=20

Writes <experiment.output_dir>/asvp_study.{json,md}, rewritten as soon as each part finishes; the data
set is generated into <experiment.output_dir>/data on first use (about a minute) unless data_root points
to one. Running again into the same folder runs only the parts it does not hold yet (same settings);
a finished study, or one run with other settings, is refused unless --overwrite.
"""
from __future__ import annotations

from collab_distill.threads import set_thread_defaults; set_thread_defaults()  # noqa: E702 (before torch loads)
import sys

from collab_distill.cli import ToolParser, add_config_args, command_line, setup_logging, user_errors


def main(argv: list[str] | None = None) -> None:
    parser = ToolParser(__doc__)
    add_config_args(parser, "configs/asvp/study.yaml", "ASVP study config")
    parser.add_argument("--overwrite", action="store_true",
                        help="run every configured part again, replacing the study in experiment.output_dir "
                             "(the generated data is kept)")
    args = parser.parse_args(argv)
    setup_logging()
    with user_errors(args.debug):
        from collab_distill.defense.study import load_study_config, run_study  # torch: after the arguments
        from data_prep.world import SyntheticWorldBuilder

        cfg = load_study_config(args.config, args.overrides)
        result = run_study(cfg, command_line(sys.argv[0], argv), SyntheticWorldBuilder(), overwrite=args.overwrite)
    print(f"ASVP study done in {result['seconds']['total']:.0f} s: {cfg.experiment.output_dir}/asvp_study.md")


if __name__ == "__main__":
    main()
