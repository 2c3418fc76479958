#!/usr/bin/env python
"""Benchmark: samples/s of ``prepare`` (info files, 1 and 2 workers) against a plain devkit loop that
computes the same per-camera projections (``map_pointcloud_to_image`` for every camera of every
keyframe, as dataloaders built on the devkit do), in one run on the same dataset.

  python bench/prepare.py --dataroot data/synthetic --version v1.0-mini
Writes bench/results/prepare.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def devkit_loop(dataroot: Path, version: str) -> int:
    """Project every keyframe's LiDAR into each of its cameras with the devkit; returns keyframes done."""
    from nuscenes.nuscenes import NuScenes, NuScenesExplorer

    nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    explorer = NuScenesExplorer(nusc)
    for sample in nusc.sample:
        for channel, token in sample["data"].items():
            if channel.startswith("CAM"):
                explorer.map_pointcloud_to_image(sample["data"]["LIDAR_TOP"], token)
    return len(nusc.sample)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataroot", type=Path, required=True)
    parser.add_argument("--version", default="v1.0-mini")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "prepare.json")
    args = parser.parse_args()
    logging.disable(logging.INFO)
    from data_prep.nuscenes_infos import prepare

    results = {}
    t0 = time.perf_counter()
    n = devkit_loop(args.dataroot, args.version)
    results["devkit loop"] = {"seconds": time.perf_counter() - t0, "samples": n}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            summary = prepare(args.dataroot, args.version, Path(tmp), workers=workers, progress=False)
            results[f"prepare, {workers} worker(s)"] = {"seconds": time.perf_counter() - t0,
                                                        "samples": sum(summary.totals.values())}
    base = results["devkit loop"]["samples"] / results["devkit loop"]["seconds"]
    for r in results.values():
        r["samples_per_s"] = r["samples"] / r["seconds"]
        r["speedup_vs_devkit"] = r["samples_per_s"] / base
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"dataroot": str(args.dataroot), "version": args.version, "results": results},
                                   indent=2) + "\n")
    print("| run | samples | seconds | samples/s | vs devkit |\n|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['samples']} | {r['seconds']:.2f} | {r['samples_per_s']:.1f} | "
              f"{r['speedup_vs_devkit']:.1f}x |")


if __name__ == "__main__":
    main()
