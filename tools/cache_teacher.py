#!/usr/bin/env python
"""Build the teacher-feature store of a stage-1 run: the frozen teacher's patch maps of every camera
image of the run's samples, once, in float16 on disk (collab_distill/data/feature_store.py).

Stage 1 then reads the maps (method.teacher_store=FOLDER) instead of decoding images and running the
teacher. The store records the teacher (architecture, weights sha256, image size, block) and the data;
a run of another teacher or image size is refused. A killed build resumes when started again.

Examples:
  python tools/cache_teacher.py --config configs/stage1/synthetic.yaml model.image.weights=teacher.safetensors \
      --out runs/teacher_store
  python tools/train_stage1.py --config configs/stage1/synthetic.yaml model.image.weights=teacher.safetensors \
      method.teacher_store=runs/teacher_store
  accelerate launch --num_processes 8 tools/cache_teacher.py --config my_stage1.yaml --batch-size 64
                                        # one shard per process; --out: my_stage1.yaml's method.teacher_store

--out defaults to the config's method.teacher_store; it must be empty or absent unless --overwrite
(the old store stays until the new one is complete). Give it the same config (and overrides) as the
stage-1 run: teacher, image size, info files and conditions must match.
"""
from collab_distill.threads import set_thread_defaults; set_thread_defaults()  # noqa: E702 (before torch loads)
from pathlib import Path

from collab_distill.cli import ToolParser, add_config_args, setup_logging, user_errors

DEFAULT_CONFIG = "configs/stage1/synthetic.yaml"


def main(argv: list[str] | None = None) -> None:
    parser = ToolParser(__doc__)
    add_config_args(parser, DEFAULT_CONFIG, "stage-1 run config (teacher: model.image; data: data.*)")
    parser.add_argument("--out", type=Path, metavar="FOLDER", help="store folder (default: method.teacher_store)")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per forward pass and process")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store once the new one is "
                                                                 "complete")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size}: must be at least 1")
    setup_logging()
    with user_errors(args.debug):
        from collab_distill.config import ConfigError, RunConfig, load_config

        cfg = load_config(args.config, args.overrides, schema=RunConfig)
        out = args.out or getattr(cfg.method, "teacher_store", "")
        if not out:
            raise ConfigError(f"{args.config}: method.teacher_store is not set (method.name={cfg.method.name}); give "
                              "--out FOLDER")
        from collab_distill.engine.teacher_store import build_teacher_store  # torch: once the config is valid

        path = build_teacher_store(cfg, out, batch_size=args.batch_size, overwrite=args.overwrite,
                                   progress=not args.no_progress)
    print(f"teacher-feature store: {path} (train stage 1 with method.teacher_store={path})")


if __name__ == "__main__":
    main()
