#!/usr/bin/env python
"""3D linear probe of a LiDAR encoder: what stage 1 taught it (ScaLR protocol on frozen features).

Trains BatchNorm1d + a zero-initialised linear layer on the frozen per-point features (16-class
lidarseg labels, train split) and reports mIoU / per-class IoU on val, overall and per condition,
plus the mean cosine between the stage-1 features and the teacher's at the projected pixels.

Examples:
  python tools/probe_lidar.py --point-weights runs/stage1/weights --out runs/probes \\
      data.info_dir=data/synthetic/infos model.image.weights=runs/teacher/weights/teacher_vit.safetensors
                                          # -> runs/probes/stage1/lidar_seg.json
  python tools/probe_lidar.py --out runs/probes ...   # the random-init floor -> runs/probes/random_init/
  python tools/probe_lidar.py --config configs/nuscenes/probe_lidar.yaml --point-weights runs/stage1/weights \
      --out runs/probes data.info_dir=data/nuscenes/infos   # full nuScenes on a GPU

Writes <experiment.output_dir>/<name>/lidar_seg.json (--out sets the folder, --name the name: by
default the run folder of --point-weights, or random_init); tools/report.py collects it. The features
of the training points go once to a float16 store, <experiment.output_dir>/<name>/train_points (config
key store), reused by a later run of the same encoder, data and subsample (--overwrite replaces a store
of something else). On a GPU: device=cuda; under `accelerate launch` every process builds its shard
of the store and the main process trains and evaluates the head.
"""
from collab_distill.threads import set_thread_defaults; set_thread_defaults()  # noqa: E702 (before torch loads)
from collab_distill.cli import ToolParser, add_config_args, add_result_args, setup_logging, user_errors, with_flags


def main(argv: list[str] | None = None) -> None:
    parser = ToolParser(__doc__)
    add_config_args(parser, "configs/probe_lidar/synthetic.yaml", "LiDAR probe config YAML")
    parser.add_argument("--point-weights", metavar="DIR",
                        help="a stage-1 weights/ folder (point_weights); omit for the randomly initialised floor")
    add_result_args(parser, "the run folder of --point-weights, or random_init", "OUT/NAME/lidar_seg.json")
    args = parser.parse_args(argv)
    setup_logging()
    overrides = with_flags({"point_weights": args.point_weights, "experiment.name": args.name,
                            "experiment.output_dir": args.out}, args.overrides)
    with user_errors(args.debug):  # config, info, data and weight file errors, an existing result: one line
        from collab_distill.config import load_config
        from collab_distill.paths import refuse_overwrite
        from collab_distill.probe.lidar import LidarProbeConfig, lidar_result_path, run_lidar_probe
        from collab_distill.probe.results import write_result

        cfg = load_config(args.config, overrides, schema=LidarProbeConfig)
        path = lidar_result_path(cfg)
        refuse_overwrite(path, args.overwrite)
        result = run_lidar_probe(cfg, progress=not args.no_progress, overwrite=args.overwrite)
        if result is None:   # a process of an accelerate launch other than the main one: its store shard is written
            return
        write_result(result, path)
    for group, r in result["results"].items():
        cos = r["stage1_teacher_cosine"]
        miou = "n/a" if r["miou"] is None else f"{100 * r['miou']:.1f}"
        print(f"{group:6s} mIoU {miou}  ({r['samples']} samples)"
              + ("" if cos is None else f"  stage-1/teacher cosine {cos:.3f}"))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
