#!/usr/bin/env python
"""3D linear probe of a LiDAR encoder: what stage 1 taught it (ScaLR protocol on frozen features).

Trains BatchNorm1d + a zero-initialised linear layer on the frozen per-point features (16-class
lidarseg labels, train split) and reports mIoU / per-class IoU on val, overall and per condition,
plus the mean cosine between the stage-1 features and the teacher's at the projected pixels.

Examples:
  python tools/probe_lidar.py --point-weights runs/stage1/weights --out runs/probes/stage1/lidar_seg.json \\
      data.info_dir=data/synthetic/infos model.image.weights=runs/teacher/weights/teacher_vit.safetensors
  python tools/probe_lidar.py --out runs/probes/random/lidar_seg.json ...   # the random-init floor
"""
from collab_distill.threads import set_thread_defaults; set_thread_defaults()  # noqa: E702 (before torch loads)
from pathlib import Path

from collab_distill.cli import OVERRIDE_HELP, ToolParser, setup_logging, user_errors
from collab_distill.config import load_config
from collab_distill.probe.lidar import LidarProbeConfig, run_lidar_probe
from collab_distill.paths import refuse_overwrite
from collab_distill.probe.results import write_result


def main() -> None:
    parser = ToolParser(__doc__)
    parser.add_argument("--config", default="configs/probe_lidar/synthetic.yaml", help="(default: %(default)s)")
    parser.add_argument("--point-weights", default=None, metavar="DIR",
                        help="a stage-1 weights/ folder; omit for the randomly initialised floor")
    parser.add_argument("--name", default=None, help="row label in the report (default: from --point-weights)")
    parser.add_argument("--out", type=Path, required=True, help="result JSON to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDE_HELP)
    args = parser.parse_args()
    setup_logging()
    overrides = list(args.overrides) + ([f"point_weights={args.point_weights}"] if args.point_weights else [])
    with user_errors(args.debug):  # config, info, data and weight file errors: one line, exit 2
        refuse_overwrite(args.out, args.overwrite)
        cfg = load_config(args.config, overrides, schema=LidarProbeConfig)
        name = args.name or (Path(cfg.point_weights).parent.name if cfg.point_weights else "random init")
        result = run_lidar_probe(cfg, name)
        write_result(result, args.out)
    for group, r in result["results"].items():
        cos = r["stage1_teacher_cosine"]
        miou = "n/a" if r["miou"] is None else f"{100 * r['miou']:.1f}"
        print(f"{group:6s} mIoU {miou}  ({r['samples']} samples)"
              + ("" if cos is None else f"  stage-1/teacher cosine {cos:.3f}"))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
