#!/usr/bin/env python
"""Prepare nuScenes (real or the synthetic world) for training: one versioned JSON info file per split.

Per keyframe it records the LiDAR file (and lidarseg labels), timestamp, scene, condition tags parsed
from the scene description, the ego pose, and per camera the image, its size, K and the composed
lidar2cam. Resumable (an interrupted run continues; a finished run does nothing unless --overwrite);
files are written atomically. Missing or truncated files are excluded and listed in the summary.
A damaged table (a record without a field, a file name that leads outside the dataroot) is one line
naming the table file and the record, exit code 2 (--debug: the traceback).

Examples:
  python tools/prepare_nuscenes.py --dataroot data/synthetic --version v1.0-mini --out data/synthetic/infos
  python tools/prepare_nuscenes.py --dataroot /data/nuscenes --version v1.0-trainval --out infos --workers 8
  python tools/prepare_nuscenes.py ... --check 5      # compare 5 samples with the devkit, write overlays
"""
from collab_distill.threads import set_thread_defaults; set_thread_defaults()  # noqa: E702 (before torch loads)
import argparse
import logging
from pathlib import Path

from collab_distill.cli import ToolParser, setup_logging, user_errors
from collab_distill.data.infos import load_infos
from collab_distill.data.taxonomy import NUSCENES_VERSIONS
from data_prep.check import check_infos
from data_prep.nuscenes_infos import PrepareError, prepare


def main(argv: list[str] | None = None) -> None:
    parser = ToolParser(__doc__)
    parser.add_argument("--dataroot", type=Path, required=True, help="folder with <version>/, samples/, maps/")
    parser.add_argument("--version", choices=NUSCENES_VERSIONS, default="v1.0-mini")
    parser.add_argument("--out", type=Path, required=True, metavar="FOLDER",
                        help="output folder for infos_<split>.json")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--overwrite", action="store_true", help="prepare again even if complete")
    parser.add_argument("--check", type=int, default=0, metavar="K",
                        help="after preparing, compare K random samples with the devkit and write overlay PNGs "
                             "to <out>/check/")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    setup_logging()
    with user_errors(args.debug):
        run(args)


def run(args: argparse.Namespace) -> None:
    """Prepare, print the summary, and with ``--check`` compare with the devkit (exit 1 if it disagrees)."""
    summary = prepare(args.dataroot, args.version, args.out, args.workers, args.overwrite, not args.quiet)
    print(summary.to_text())
    if args.check:
        nonempty = [s for s, counts in summary.samples.items() if counts]
        if not nonempty:
            raise PrepareError(f"--check: {args.out} holds no prepared sample to check (see the summary above)")
        split = "val" if "val" in nonempty else nonempty[0]
        result = check_infos(load_infos(args.out / f"infos_{split}.json"), args.version, args.check,
                             args.out / "check")
        print(f"check ({split}, {result.checked} sample-cameras): max pixel error vs the devkit "
              f"{result.max_error_px:.2e} px (float64 points), {result.max_error_px_float32:.2e} px with the "
              f"devkit's float32 points; identical kept sets: {result.same_kept_sets}; overlays in "
              f"{args.out / 'check'}")
        if not result.same_kept_sets or not result.max_error_px < 1e-3:
            logging.getLogger("prepare").error("projection disagrees with the devkit")
            raise SystemExit(1)


if __name__ == "__main__":
    main()
