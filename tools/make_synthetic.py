#!/usr/bin/env python
"""Generate the synthetic driving world in the nuScenes format (tables, images, LiDAR, lidarseg, maps).

The official devkit loads the result: NuScenes(version, dataroot=OUT). Scene names come from the
official split lists, so nuscenes.utils.splits gives train/val. Each scene has a condition (clear,
night, rain, fog, snow, or night+<weather>) written into its description.

Examples:
  python tools/make_synthetic.py --out data/synthetic                       # default mini set (10 scenes)
  python tools/make_synthetic.py --out /tmp/tiny --config configs/synthetic/tiny.yaml
  python tools/make_synthetic.py --out data/syn --scenes 4 --conditions clear fog --paired-clear
  python tools/make_synthetic.py --out data/syn weather.fog_visibility_m=30 --overwrite

Settings come from the schema defaults, then --config, then the flags, then the key=value overrides.
"""
from __future__ import annotations

from collab_distill.threads import set_thread_defaults; set_thread_defaults()  # noqa: E702 (before torch loads)
import argparse
import sys
from pathlib import Path

from collab_distill.cli import ToolParser, add_config_args, setup_logging, user_errors
from collab_distill.config import ConfigError, load_config
from data_prep.synthetic.config import SYNTHETIC_VERSIONS, SyntheticConfig, check_output_dir, validate_config


def _parser() -> argparse.ArgumentParser:
    p = ToolParser(__doc__)
    p.add_argument("--out", required=True, type=Path, metavar="FOLDER",
                   help="dataset root to create (must be empty or absent)")
    add_config_args(p, what="synthetic world config, e.g. configs/synthetic/tiny.yaml (default: the schema's "
                            "defaults)", required=False)
    p.add_argument("--version", choices=SYNTHETIC_VERSIONS,
                   help="v1.0-mini uses the 10 mini scene names, v1.0-trainval the 850 train/val names")
    p.add_argument("--scenes", type=int, metavar="N", help="number of scenes (default 10)")
    p.add_argument("--samples-per-scene", type=int, metavar="N", help="keyframes per scene at 2 Hz (default 10)")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("W", "H"),
                   help="camera image size, at most 1600 900 (default 448 252)")
    p.add_argument("--conditions", nargs="+", metavar="C",
                   help="conditions the scenes take turns in: clear night rain fog snow night+rain ... "
                        "(with clear, every other scene of each split is clear)")
    p.add_argument("--paired-clear", action=argparse.BooleanOptionalAction, default=None,
                   help="also render every adverse sample in clear daylight into paired_clear/<sample>/<CAM>.jpg")
    p.add_argument("--dense-maps", action=argparse.BooleanOptionalAction, default=None,
                   help="write per-pixel class and depth maps into dense/<sample>/<CAM>_{class,depth}.png")
    p.add_argument("--severity", type=float, help="weather severity multiplier (default 1.0)")
    p.add_argument("--seed", type=int, help="random seed; the same seed gives byte-identical files")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset made by this tool")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="scenes rendered in parallel processes (output does not depend on it; default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _overrides(args: argparse.Namespace) -> list[str]:
    """Dotted config overrides for the flags that were given."""
    out = []
    for flag, key in (("version", "version"), ("scenes", "scenes"), ("samples_per_scene", "samples_per_scene"),
                      ("paired_clear", "paired_clear"), ("dense_maps", "dense_maps"), ("seed", "seed"),
                      ("severity", "weather.severity")):
        value = getattr(args, flag)
        if value is not None:
            out.append(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
    if args.image_size is not None:
        out.append(f"image_size=[{args.image_size[0]},{args.image_size[1]}]")
    if args.conditions is not None:
        out.append("conditions=[" + ",".join(f"'{c}'" for c in args.conditions) + "]")
    return out + list(args.overrides)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    with user_errors(args.debug):
        if args.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {args.workers}")
        cfg = load_config(args.config, _overrides(args), schema=SyntheticConfig)
        validate_config(cfg)
        check_output_dir(args.out, args.overwrite)
        setup_logging()
        from data_prep.synthetic.generate import generate  # heavy imports only once the input is valid

        summary = generate(cfg, args.out, overwrite=args.overwrite, workers=args.workers, progress=not args.quiet)
    print("\n".join(summary.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
