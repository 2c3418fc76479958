#!/usr/bin/env python
"""Collect probe results of several runs (frozen teacher, teacher_plus, asymmetric, self_distill,
stage 2, ...) into one report: report.md (a table per task and condition, per-class IoU, the
recipes), report.json (the same numbers) and PNGs (per-condition bars, PCA-RGB feature maps,
clear-vs-adverse token scatter, ground-truth/prediction overlays).

Examples:
  python tools/report.py runs/probes --out reports/synthetic
  python tools/report.py runs/probes/teacher/seg.json runs/probes/stage2/seg.json --out reports/cmp
  python tools/report.py runs/probes --order teacher,stage2,asymmetric
"""
from collab_distill.threads import set_thread_defaults; set_thread_defaults()  # noqa: E702 (before torch loads)
from collab_distill.cli import ToolParser, user_errors


def main(argv: list[str] | None = None) -> None:
    parser = ToolParser(__doc__)
    parser.add_argument("inputs", nargs="+", metavar="RESULT",
                        help="result JSON files (seg.json, depth.json) or folders searched recursively")
    parser.add_argument("--out", default="reports/probes", metavar="FOLDER",
                        help="output folder (default: %(default)s)")
    parser.add_argument("--order", default="", help="comma-separated order of the table rows (default: teacher, "
                                                    "teacher_plus, asymmetric, self_distill, stage2, others)")
    parser.add_argument("--overwrite", action="store_true", help="replace a report already in --out")
    args = parser.parse_args(argv)
    with user_errors(args.debug):  # unreadable results, a report already in --out: one line, exit 2
        from collab_distill.report import build_report  # torch, matplotlib: after the arguments

        made = build_report(args.inputs, args.out, [m for m in args.order.split(",") if m] or None, args.overwrite)
    print(f"report: {made['markdown']} ({len(made) - 2} figures)")


if __name__ == "__main__":
    main()
