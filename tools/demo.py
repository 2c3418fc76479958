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

The size is a preset (schema demo): configs/demo/default.yaml, or configs/demo/quick.yaml with --quick;
key=value overrides change it (e.g. stage1.train.epochs=3, the keys of configs/demo/default.yaml).

Examples:
  scripts/run.sh                     # everything, default size
  scripts/run.sh --quick             # the small smoke-test size (--config configs/demo/quick.yaml)
  scripts/run.sh --seeds 0 1 2       # three seeds and their mean +- std (docs/results.md)
  scripts/run.sh --teacher-weights dinov2_vits14.pth --teacher-model vit_small_patch14_dinov2
  python tools/demo.py --quick --out runs/demo_short stage1.train.epochs=1
"""
from __future__ import annotations

from collab_distill.threads import set_thread_defaults; set_thread_defaults()  # noqa: E702 (before torch loads)
import json
from pathlib import Path
from typing import TYPE_CHECKING

from collab_distill.cli import ToolParser, add_config_args, setup_logging, user_errors

if TYPE_CHECKING:
    from collab_distill.pipeline import DemoOptions


def main(argv: list[str] | None = None) -> None:
    parser = ToolParser(__doc__)
    add_config_args(parser, what="demo size preset (schema demo; default: configs/demo/default.yaml)",
                    required=False)
    parser.add_argument("--quick", action="store_true",
                        help="the small smoke-test size: --config configs/demo/quick.yaml")
    parser.add_argument("--out", type=Path, default=None, metavar="FOLDER",
                        help="outputs (default runs/demo; runs/demo_<preset> for another preset, e.g. runs/demo_quick)")
    parser.add_argument("--data", type=Path, default=None, metavar="FOLDER",
                        help="synthetic world folder (default data/synthetic_demo; data/synthetic_demo_<preset>)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="S",
                        help="seeds of the training runs and probes, each in OUT/seed<S>/ (default 0); with "
                             "several, OUT/seeds.md gets mean +- std (the teacher and the world are shared)")
    parser.add_argument("--teacher-weights", default="", metavar="PATH",
                        help="a real teacher checkpoint (timm or original DINOv2 format) instead of training one")
    parser.add_argument("--teacher-model", default="vit_tiny_patch14_cpu",
                        help="timm model name of the teacher (default %(default)s)")
    args = parser.parse_args(argv)
    if args.quick and args.config:
        parser.error("--quick is --config configs/demo/quick.yaml: give one of them")
    setup_logging()
    with user_errors(args.debug):
        from collab_distill.pipeline import DEFAULT_PRESET, QUICK_PRESET, DemoOptions, run_demo  # torch
        from data_prep.world import SyntheticWorldBuilder

        preset = QUICK_PRESET if args.quick else args.config or DEFAULT_PRESET
        suffix = "" if Path(preset).stem == "default" else f"_{Path(preset).stem}"
        opts = DemoOptions(out=args.out or Path(f"runs/demo{suffix}"),
                           data=args.data or Path(f"data/synthetic_demo{suffix}"), seeds=tuple(args.seeds),
                           preset=preset, preset_overrides=tuple(args.overrides),
                           teacher_weights=args.teacher_weights, teacher_model=args.teacher_model)
        done = run_demo(opts, SyntheticWorldBuilder())
    print("\nSteps:")
    for step in done:
        took = f"{step.seconds:.0f} s" if step.seconds else "skipped (done before)"
        print(f"  {step.name:32s} {took}")
    print(f"  {'total':32s} {sum(s.seconds for s in done):.0f} s")
    print(final_tables(opts))


def final_tables(opts: DemoOptions) -> str:
    """The headline tables of the last run: mean +- std over seeds, or the one seed's report."""
    from collab_distill.pipeline import seed_dir
    from collab_distill.report.tables import headlines

    if len(opts.seeds) > 1:
        return (opts.out / "seeds.md").read_text() + f"\nPer-seed reports: {opts.out}/seed<S>/report/report.md"
    report_dir = seed_dir(opts, opts.seeds[0]) / "report"
    tables = headlines(json.loads((report_dir / "report.json").read_text()))
    return f"\n{tables}\nThe full report with per-class IoU, recipes and figures: {report_dir / 'report.md'}"


if __name__ == "__main__":
    main()
