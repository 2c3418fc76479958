#!/usr/bin/env python
"""The main job on the embedded default: a synthetic nuScenes-format world, then every stage.

Steps: synthetic world -> prepare -> a clear-weather teacher -> stage 1 -> stage 2 -> baselines
(teacher_plus, asymmetric, self_distill) -> seg and depth probes per condition -> 3D probes -> report.
A step whose outputs exist is skipped, so an interrupted run continues where it stopped; delete a
step's output under --out to run it again. Outputs: OUT/teacher/ (shared), OUT/seed<S>/<step>/ per
seed, OUT/seed<S>/report/report.md, OUT/seeds.md (mean +- std, several seeds), OUT/timings.jsonl.

No DINOv2 weights can be downloaded here, so the demo first trains its own small ViT teacher on clear
synthetic images (supervised by the projected LiDAR: 16-class labels and depth). With
--teacher-weights a real DINOv2/timm checkpoint is used instead (also set --teacher-model).

Examples:
  scripts/run.sh                     # everything, default size
  scripts/run.sh --quick             # the small smoke-test size
  scripts/run.sh --seeds 0 1 2       # three seeds and their mean +- std (docs/results.md)
  scripts/run.sh --teacher-weights dinov2_vits14.pth --teacher-model vit_small_patch14_dinov2
"""
from collab_distill.threads import set_thread_defaults; set_thread_defaults()  # noqa: E702 (before torch loads)
import json
from pathlib import Path

from collab_distill.cli import ToolParser, setup_logging, user_errors
from collab_distill.pipeline import DemoOptions, run_demo, seed_dir
from collab_distill.report.tables import headlines
from data_prep.world import SyntheticWorldBuilder


def main(argv: list[str] | None = None) -> None:
    parser = ToolParser(__doc__)
    parser.add_argument("--out", type=Path, default=None, metavar="FOLDER",
                        help="outputs (default runs/demo, runs/demo_quick)")
    parser.add_argument("--data", type=Path, default=None,
                        help="synthetic world folder (default data/synthetic_demo, data/synthetic_demo_quick)")
    parser.add_argument("--quick", action="store_true", help="small world and short schedules (smoke test)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="S",
                        help="seeds of the training runs and probes, each in OUT/seed<S>/ (default 0); with "
                             "several, OUT/seeds.md gets mean +- std (the teacher and the world are shared)")
    parser.add_argument("--teacher-weights", default="", metavar="PATH",
                        help="a real teacher checkpoint (timm or original DINOv2 format) instead of training one")
    parser.add_argument("--teacher-model", default="vit_tiny_patch14_cpu",
                        help="timm model name of the teacher (default %(default)s)")
    args = parser.parse_args(argv)
    setup_logging()
    suffix = "_quick" if args.quick else ""
    opts = DemoOptions(out=args.out or Path(f"runs/demo{suffix}"), data=args.data or Path(f"data/synthetic_demo{suffix}"),
                       seeds=tuple(args.seeds), quick=args.quick, teacher_weights=args.teacher_weights,
                       teacher_model=args.teacher_model)
    with user_errors(args.debug):
        done = run_demo(opts, SyntheticWorldBuilder())
    print("\nSteps:")
    for step in done:
        took = f"{step.seconds:.0f} s" if step.seconds else "skipped (done before)"
        print(f"  {step.name:32s} {took}")
    print(f"  {'total':32s} {sum(s.seconds for s in done):.0f} s")
    print(final_tables(opts))


def final_tables(opts: DemoOptions) -> str:
    """The headline tables of the last run: mean +- std over seeds, or the one seed's report."""
    if len(opts.seeds) > 1:
        return (opts.out / "seeds.md").read_text() + f"\nPer-seed reports: {opts.out}/seed<S>/report/report.md"
    report_dir = seed_dir(opts, opts.seeds[0]) / "report"
    tables = headlines(json.loads((report_dir / "report.json").read_text()))
    return f"\n{tables}\nThe full report with per-class IoU, recipes and figures: {report_dir / 'report.md'}"

if __name__ == "__main__":
    main()
