#!/usr/bin/env python
"""Benchmark: samples/s of the paired dataset + collate with 0, 1 and 2 DataLoader workers, and where
the time of one sample goes (image decoding+resize, projection, voxelisation, the rest); then, with 0
and 2 workers, float32 against uint8 images (data.image_dtype) and with against without points (the
image-only methods' dataset, with_points=False).

  python bench/dataloader.py --info-dir data/synthetic/infos [key=value data overrides]
Writes bench/results/dataloader.json and prints Markdown tables.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def timed(store: dict[str, float], key: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    store[key] = store.get(key, 0.0) + time.perf_counter() - t0


def breakdown(dataset, collate, n: int) -> dict[str, float]:
    """Seconds per sample in each stage, measured by wrapping the stage functions in the main process."""
    import collab_distill.data.collate as collate_mod
    import collab_distill.data.dataset as dataset_mod

    store: dict[str, float] = {}
    originals = {"load_image": dataset_mod.load_image, "project_to_pairs": dataset_mod.project_to_pairs,
                 "voxelize": collate_mod.voxelize}

    def wrap(module, name: str, label: str):
        fn = originals[name]

        def inner(*a, **k):
            with timed(store, label):
                return fn(*a, **k)
        setattr(module, name, inner)

    wrap(dataset_mod, "load_image", "image decoding + resize")
    wrap(dataset_mod, "project_to_pairs", "projection")
    wrap(collate_mod, "voxelize", "voxelisation")
    try:
        with timed(store, "total"):
            for i in range(n):
                collate([dataset[i]])
    finally:
        dataset_mod.load_image = originals["load_image"]
        dataset_mod.project_to_pairs = originals["project_to_pairs"]
        collate_mod.voxelize = originals["voxelize"]
    store["other (points, labels, augmentation, collate)"] = store["total"] - sum(
        v for k, v in store.items() if k != "total")
    return {k: v / n for k, v in store.items()}


def samples_per_s(dataset, collate, n: int, batch_size: int, workers: int) -> float:
    """Samples/s of a DataLoader over the first ``n`` samples."""
    loader = DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=batch_size, collate_fn=collate,
                        num_workers=workers)
    t0 = time.perf_counter()
    count = sum(len(b["tokens"]) for b in loader)
    return count / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--info-dir", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "dataloader.json")
    parser.add_argument("overrides", nargs="*", help="config overrides (data.cameras=[all] ...)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from collab_distill.config import load_config
    from collab_distill.data.collate import Collate
    from collab_distill.data.dataset import PairedDataset

    cfg = load_config(REPO / "configs" / "stage1" / "synthetic.yaml",
                      [f"data.info_dir={args.info_dir}", "data.conditions=[all]", "data.augment=true",
                       *args.overrides])
    dataset = PairedDataset(cfg.data, seed=0)
    collate = Collate(cfg.data.voxel_size)
    n = min(args.samples, len(dataset))
    rates = {workers: samples_per_s(dataset, collate, n, args.batch_size, workers) for workers in (0, 1, 2)}
    parts = breakdown(dataset, collate, n)
    variants = {}
    for label, dtype, points in (("float32 images, points", "float32", True), ("uint8 images, points", "uint8", True),
                                 ("uint8 images, no points", "uint8", False)):
        variant = PairedDataset(dataclasses.replace(cfg.data, image_dtype=dtype), seed=0, with_points=points)
        variants[label] = {workers: samples_per_s(variant, collate, n, args.batch_size, workers) for workers in (0, 2)}
    report = {"info_dir": str(args.info_dir), "overrides": args.overrides, "samples": n,
              "image_size": list(cfg.data.image_size), "cameras": cfg.data.cameras,
              "samples_per_s": rates, "seconds_per_sample": parts, "variants_samples_per_s": variants,
              "load_average": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{n} samples, cameras {cfg.data.cameras}, images {tuple(cfg.data.image_size)}, with augmentation\n")
    print("| workers | samples/s |\n|---:|---:|")
    for w, r in rates.items():
        print(f"| {w} | {r:.1f} |")
    total = parts["total"]
    print("\n| stage | ms/sample | share |\n|---|---:|---:|")
    for k, v in parts.items():
        if k != "total":
            print(f"| {k} | {1000 * v:.1f} | {100 * v / total:.0f}% |")
    print(f"| total | {1000 * total:.1f} | 100% |")
    print("\n| dataset | 0 workers | 2 workers |\n|---|---:|---:|")
    for label, r in variants.items():
        print(f"| {label} | {r[0]:.1f} | {r[2]:.1f} |")


if __name__ == "__main__":
    main()
