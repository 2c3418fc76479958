#!/usr/bin/env python
"""Benchmark: stage-1 samples/s, data loading plus optimiser step, with the teacher-feature store
against the live-teacher JPEG path, on the same batches in one run.

Targets (issue 15): >= 3x with the tiny CPU teacher on one camera, >= 10x with ViT-S/14 at 224x448 on
six cameras.

One command, about 3 minutes on one idle core. Unless ``--info-dir`` is given, it generates a
synthetic world in a temporary folder: one clear train scene of ``--samples`` keyframes, six cameras
at nuScenes' 1600x900 (so a JPEG costs what a real one does to decode). Then, per row (``--rows``):

* the teacher-feature store of the row's config is built (``build_teacher_store``; timed);
* two stage-1 runs of that config, the same seed and initialisation: ``live`` (the dataset decodes
  the JPEGs, the frozen teacher runs in the step) and ``store`` (the dataset reads the stored maps);
* one warm-up step each, then ``--rounds`` rounds, each timing one pass of each variant over the
  same ``--batches`` batches (the same ``(index, epoch)`` keys, so the same points, pairs and 3D
  augmentation): loading (``dataset[key]`` for each sample, in this process, and the collate) and
  the step (forward, backward, optimiser) are timed separately.

samples/s is all samples over all timed seconds; the ratio is store over live. Also reported: the
live teacher's forward time (forward hooks, part of the step) and the "replaced part" ratio, what the
store replaces (loading with JPEGs plus the teacher's forward pass) over loading from the store: the
ratio the whole step would show if the rest of it (the sparse UNet, on a CPU most of the step)
were free. The CPU model, the
thread count and the 1-minute load average before and after each row are recorded: on a shared
machine the absolute numbers move, the ratio less.

  OMP_NUM_THREADS=1 python bench/teacher_store.py            # writes bench/results/teacher_store.json
  OMP_NUM_THREADS=1 python bench/teacher_store.py --rows tiny --info-dir data/synthetic/infos
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from stall import cpu_model, write_atomic  # noqa: E402  (bench/ helpers)

ROWS = {  # name: (overrides of configs/stage1/synthetic.yaml, target ratio)
    "tiny": (["model.image.name=vit_tiny_patch14_cpu", "data.image_size=[126,252]", "data.cameras=[CAM_FRONT]"],
             3.0),
    "vits": (["model.image.name=vit_small_patch14_dinov2", "data.image_size=[224,448]", "data.cameras=[all]"],
             10.0),
}
DESCRIPTIONS = {"tiny": "vit_tiny_patch14_cpu, 126x252, 1 camera", "vits": "ViT-S/14 (random), 224x448, 6 cameras"}
VARIANTS = ("live", "store")


def make_world(root: Path, samples: int) -> Path:
    """One clear train scene of ``samples`` keyframes, six 1600x900 cameras, prepared; returns its info folder."""
    import dataclasses

    from collab_distill.config import load_config
    from data_prep.nuscenes_infos import prepare
    from data_prep.synthetic.config import SyntheticConfig
    from data_prep.synthetic.generate import generate

    world = load_config(REPO / "configs" / "synthetic" / "mini.yaml", schema=SyntheticConfig)
    world = dataclasses.replace(world, scenes=1, samples_per_scene=samples, image_size=(1600, 900),
                                conditions=["clear"], paired_clear=False)
    generate(world, root, progress=False)
    prepare(root, world.version, root / "infos", workers=1, progress=False)
    return root / "infos"


def run_row(name: str, info_dir: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Build the row's store, then time the live and the store variants on the same batches."""
    import torch

    from collab_distill.config import load_config
    from collab_distill.data.collate import Collate
    from collab_distill.data.dataset import PairedDataset
    from collab_distill.data.feature_store import FeatureStore
    from collab_distill.engine.optim import build_optimizer
    from collab_distill.engine.teacher_store import build_teacher_store
    from collab_distill.methods.registry import build_method

    overrides, target = ROWS[name]
    load_before = os.getloadavg()[0]
    base = [f"data.info_dir={info_dir}", *overrides, *args.overrides]
    t0 = time.perf_counter()
    store = build_teacher_store(load_config("configs/stage1/synthetic.yaml", base), work / f"store_{name}",
                                batch_size=12, progress=False)
    build_s = time.perf_counter() - t0
    runs = {}
    for variant in VARIANTS:
        cfg = load_config("configs/stage1/synthetic.yaml",
                          [*base, f"method.teacher_store={store if variant == 'store' else ''}"])
        dataset = PairedDataset(cfg.data, seed=0, teacher_store=cfg.method.teacher_store)
        torch.manual_seed(0)
        method = build_method(cfg).train()
        runs[variant] = (dataset, Collate(cfg.data.voxel_size), method, build_optimizer(method, cfg.optim))
    n = len(runs["live"][0])
    keys = [[((b * args.batch_size + j) % n, 0) for j in range(args.batch_size)] for b in range(args.batches)]
    times: dict[str, dict[str, float]] = {v: {"load_s": 0.0, "step_s": 0.0, "teacher_s": 0.0, "samples": 0}
                                          for v in VARIANTS}
    clock = {"start": 0.0, "total": 0.0}  # the live teacher's forward passes, timed by hooks (part of step_s)
    teacher = runs["live"][2].teacher
    teacher.register_forward_pre_hook(lambda *_: clock.update(start=time.perf_counter()))
    teacher.register_forward_hook(lambda *_: clock.update(total=clock["total"] + time.perf_counter() - clock["start"]))

    def one_pass(variant: str, batches: list, record: bool) -> None:
        dataset, collate, method, optimizer = runs[variant]
        for batch_keys in batches:
            clock["total"], t0 = 0.0, time.perf_counter()
            batch = collate([dataset[k] for k in batch_keys])
            t1 = time.perf_counter()
            method(batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            t2 = time.perf_counter()
            if record:
                times[variant]["load_s"] += t1 - t0
                times[variant]["step_s"] += t2 - t1
                times[variant]["teacher_s"] += clock["total"]
                times[variant]["samples"] += len(batch_keys)

    for variant in VARIANTS:  # warm-up: spconv's algorithm choice, the page cache of the files
        one_pass(variant, keys[:1], record=False)
    for _ in range(args.rounds):
        for variant in VARIANTS:
            one_pass(variant, keys, record=True)
    result = {"config": DESCRIPTIONS[name], "overrides": overrides, "target": target, "store_build_s": build_s,
              "store_images": FeatureStore(store).rows, "load_1min": [load_before, os.getloadavg()[0]]}
    for variant, t in times.items():
        total = t["load_s"] + t["step_s"]
        result[variant] = {**t, "samples_per_s": t["samples"] / total,
                           "load_s_per_sample": t["load_s"] / t["samples"],
                           "step_s_per_sample": t["step_s"] / t["samples"],
                           "teacher_s_per_sample": t["teacher_s"] / t["samples"]}
    result["ratio"] = result["store"]["samples_per_s"] / result["live"]["samples_per_s"]
    # what the store replaces: loading with JPEGs plus the teacher's forward pass, against loading from the store
    live, stored = result["live"], result["store"]
    result["replaced_part_ratio"] = (live["load_s_per_sample"] + live["teacher_s_per_sample"]) / \
        stored["load_s_per_sample"]
    result["met"] = result["ratio"] >= target
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--info-dir", type=Path, help="a prepared world (default: generate one, see above)")
    parser.add_argument("--samples", type=int, default=4, help="keyframes of the generated world")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--batches", type=int, default=2, help="distinct batches per pass")
    parser.add_argument("--rounds", type=int, default=2, help="timed passes of each variant, interleaved")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "teacher_store.json")
    parser.add_argument("overrides", nargs="*", help="config overrides for every row")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        info_dir = args.info_dir or make_world(Path(tmp) / "world", args.samples)
        world_s = time.perf_counter() - start
        rows = {name: run_row(name, info_dir, Path(tmp), args) for name in args.rows}
    report = {"cpu": cpu_model(), "cpus": len(os.sched_getaffinity(0)), "threads": args.threads,
              "load_before": load_before, "batch_size": args.batch_size, "batches": args.batches,
              "rounds": args.rounds, "world": str(args.info_dir or f"generated: 1 clear scene x {args.samples} "
                                                                    "samples, 6 cameras at 1600x900"),
              "world_s": world_s, "python": platform.python_version(), "torch": torch.__version__,
              "seconds": time.perf_counter() - start, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "rows": rows}
    write_atomic(args.out, json.dumps(report, indent=2) + "\n")
    print(f"CPU {report['cpu']}, {args.threads} thread(s), batch {args.batch_size}, load average before "
          f"{load_before:.2f}\n")
    print("| teacher, cameras | live samples/s | store samples/s | ratio | target | live load / teacher / step per "
          "sample | store load / step per sample | replaced part | store build | load avg |\n"
          "|---|---:|---:|---:|---:|---|---|---:|---:|---|")
    for r in rows.values():
        live, store = r["live"], r["store"]
        print(f"| {r['config']} | {live['samples_per_s']:.3f} | {store['samples_per_s']:.3f} | {r['ratio']:.2f}x | "
              f">= {r['target']:.0f}x ({'met' if r['met'] else 'not met'}) | {live['load_s_per_sample']:.3f} / "
              f"{live['teacher_s_per_sample']:.3f} / {live['step_s_per_sample']:.3f} s | "
              f"{store['load_s_per_sample']:.3f} / {store['step_s_per_sample']:.3f} s | "
              f"{r['replaced_part_ratio']:.0f}x | {r['store_images']} images in {r['store_build_s']:.1f} s | "
              f"{r['load_1min'][0]:.1f}-{r['load_1min'][1]:.1f} |")
    print(f"\n{report['seconds']:.0f} s in all; wrote {args.out}")


if __name__ == "__main__":
    main()
