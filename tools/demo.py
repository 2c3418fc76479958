#!/usr/bin/env python
"""The main job on the embedded default: a synthetic nuScenes-format world, then every stage.

Steps: synthetic world -> prepare -> a clear-weather teacher -> stage 1 -> stage 2 -> baselines
(teacher_plus, asymmetric, self_distill) -> seg and depth probes per condition -> 3D probes -> report.
A step whose outputs exist is skipped, so an interrupted run continues where it stopped; delete a
step's output under --out to run it again.

No DINOv2 weights can be downloaded here, so the demo first trains its own small ViT teacher on clear
synthetic images (supervised by the projected LiDAR: 16-class labels and depth). With
--teacher-weights a real DINOv2/timm checkpoint is used instead (also set --teacher-model).

Examples:
  scripts/run.sh                     # everything, default size
  scripts/run.sh --quick             # the small smoke-test size
  scripts/run.sh --teacher-weights dinov2_vits14.pth --teacher-model vit_small_patch14_dinov2
"""
import argparse
from pathlib import Path

from collab_distill.cli import setup_logging
from collab_distill.pipeline import DemoOptions, run_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="outputs (default runs/demo, runs/demo_quick)")
    parser.add_argument("--data", type=Path, default=None,
                        help="synthetic dataset folder (default data/synthetic, data/synthetic_quick)")
    parser.add_argument("--quick", action="store_true", help="small world and short schedules (smoke test)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every training run")
    parser.add_argument("--teacher-weights", default="", metavar="PATH",
                        help="a real teacher checkpoint (timm or original DINOv2 format) instead of training one")
    parser.add_argument("--teacher-model", default="vit_tiny_patch14_cpu",
                        help="timm model name of the teacher (default %(default)s)")
    args = parser.parse_args()
    setup_logging()
    suffix = "_quick" if args.quick else ""
    opts = DemoOptions(out=args.out or Path(f"runs/demo{suffix}"), data=args.data or Path(f"data/synthetic{suffix}"),
                       seed=args.seed, quick=args.quick, teacher_weights=args.teacher_weights,
                       teacher_model=args.teacher_model)
    done = run_demo(opts)
    print("\nSteps:")
    for step in done:
        took = f"{step.seconds:.0f} s" if step.seconds else "skipped (done before)"
        print(f"  {step.name:24s} {took}")
    report = opts.out / "report" / "report.md"
    print(f"\n{report.read_text()}" if report.is_file() else "")
    print(f"Outputs in {opts.out}/ (one folder per step: config.yaml, metrics.jsonl, tb/, weights/); "
          f"the report with its figures: {report}")


if __name__ == "__main__":
    main()
