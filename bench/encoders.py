#!/usr/bin/env python
"""Benchmark: forward+backward throughput and peak memory of the encoders.

Cases: the point encoder (CPU preset of PointEncoderConfig) on 20k and 50k LiDAR-like points (two
samples per batch), and the ViT presets (plus DINOv2 ViT-S/14 for scale) at the default image size
of the data config, batch 2, as trainable students. Each case runs in a fresh process, so that
peak memory is its own:
  * CPU: peak resident memory during the first forward+backward above the resident memory before
    it, i.e. the working memory on top of the model and inputs (Linux: the peak is reset through
    ``/proc/self/clear_refs``; elsewhere the growth of ``ru_maxrss``, which can under-count);
  * CUDA: ``torch.cuda.max_memory_allocated`` during the timed steps.
Each case also times a fixed dense reference (an MLP forward+backward) in the same process and
reports its own time in those units, which compares across machines better than seconds.

Usage:
  python bench/encoders.py                  # CUDA when available, else CPU
  python bench/encoders.py --device cpu --repeats 5
Writes bench/results/encoders.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import re
import resource
import time
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]
POINT_SIZES = (20_000, 50_000)
VIT_NAMES = ("vit_pico_patch14_cpu", "vit_tiny_patch14_cpu", "vit_small_patch14_dinov2")
VIT_BATCH = 2


def lidar_sweep(num_points: int, gen: torch.Generator) -> torch.Tensor:
    """``(num_points, 5)`` points (x, y, z, intensity, time lag 0) of a 32-beam spinning LiDAR 1.8 m above flat
    ground, inside a ring of walls 10-40 m away (one distance per 5-degree sector): surfaces, as real sweeps have."""
    elevation = torch.deg2rad(torch.linspace(-30.0, 10.0, 32))[torch.randint(0, 32, (num_points,), generator=gen)]
    azimuth = torch.rand(num_points, generator=gen) * 2 * math.pi
    walls = 10 + 30 * torch.rand(72, generator=gen)
    wall = walls[(azimuth / (2 * math.pi) * 72).long().clamp(max=71)]
    ground = torch.where(elevation < 0, 1.8 / torch.tan(-elevation).clamp(min=1e-6), torch.full_like(wall, 1e9))
    rng = torch.minimum(ground, wall) + torch.randn(num_points, generator=gen) * 0.02
    xyz = torch.stack([rng * torch.cos(elevation) * torch.cos(azimuth), rng * torch.cos(elevation) * torch.sin(azimuth),
                       rng * torch.sin(elevation)], dim=1)
    return torch.cat([xyz, torch.rand(num_points, 1, generator=gen), torch.zeros(num_points, 1)], dim=1)


def point_case(num_points: int, device: torch.device) -> tuple[torch.nn.Module, Callable[[], torch.Tensor], dict]:
    from collab_distill.config import DataConfig
    from collab_distill.data.voxelize import voxelize
    from collab_distill.models import PointEncoder, PointEncoderConfig

    gen = torch.Generator().manual_seed(0)
    half = num_points // 2
    points = torch.cat([lidar_sweep(half, gen), lidar_sweep(num_points - half, gen)]).to(device)
    offsets = torch.tensor([half, num_points], device=device)
    model = PointEncoder(PointEncoderConfig(), device=device).train()
    voxel_size = DataConfig().voxel_size

    def step() -> torch.Tensor:                                             # the collate's work + the model's
        return model(voxelize(points, offsets, voxel_size))

    voxels = len(voxelize(points, offsets, voxel_size).coords)
    return model, step, {"items": num_points, "unit": "points/s", "voxels": voxels}


def vit_case(name: str, device: torch.device) -> tuple[torch.nn.Module, Callable[[], torch.Tensor], dict]:
    from collab_distill.config import DataConfig
    from collab_distill.models import ImageEncoder, ImageEncoderConfig

    size = DataConfig().image_size
    model = ImageEncoder(ImageEncoderConfig(name=name, weights="random"), size).to(device).train()
    images = torch.rand(VIT_BATCH, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)
    return model, lambda: model(images).patch[-1], {"items": VIT_BATCH, "unit": "images/s", "image_size": list(size)}


def reference_step(device: torch.device) -> Callable[[], torch.Tensor]:
    """A fixed dense workload: 4-layer MLP, 2048 x 1024, forward only (backward is added by the timer)."""
    gen = torch.Generator().manual_seed(0)
    mlp = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(4)]).to(device)
    x = torch.randn(2048, 1024, generator=gen).to(device)
    return lambda: mlp(x)


def peak_rss_mb(step: Callable[[], None]) -> float:
    """Peak resident memory (MB) while ``step`` runs, above the resident memory before it."""
    status = Path("/proc/self/status")
    try:
        Path("/proc/self/clear_refs").write_text("5")                         # reset VmHWM to VmRSS
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        step()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    before = int(re.search(r"VmRSS:\s+(\d+)", status.read_text()).group(1))
    step()
    return (int(re.search(r"VmHWM:\s+(\d+)", status.read_text()).group(1)) - before) / 1024


def timed(step: Callable[[], torch.Tensor], repeats: int, device: torch.device) -> float:
    """Best wall time of ``repeats`` forward+backward steps (after the caller's warm-up)."""
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step().float().pow(2).mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def run_case(kind: str, arg: Any, device_name: str, repeats: int, threads: int) -> dict:
    """Build one case, warm up (measuring CPU peak memory), time it and the reference; in a fresh process."""
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    model, step, info = point_case(arg, device) if kind == "point" else vit_case(arg, device)
    params = sum(p.numel() for p in model.parameters())
    peak_mb = peak_rss_mb(lambda: step().float().pow(2).mean().backward())   # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = timed(step, repeats, device)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    reference = reference_step(device)
    timed(reference, 1, device)
    ref_seconds = timed(reference, repeats, device)
    return {"case": f"{kind}:{arg}", "params": params, "seconds": seconds,
            "throughput": info.pop("items") / seconds, "peak_mem_mb": peak_mb,
            "reference_units": seconds / ref_seconds, **info}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per case; the best is kept")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "encoders.json")
    args = parser.parse_args()
    cases = [("point", n) for n in POINT_SIZES] + [("vit", name) for name in VIT_NAMES]
    ctx = mp.get_context("spawn")
    results = []
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        for kind, arg in cases:
            results.append(pool.apply(run_case, (kind, arg, args.device, args.repeats, args.threads)))
    report = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
              "threads": args.threads, "torch": torch.__version__, "repeats": args.repeats, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"device {report['device']}, {args.threads} thread(s), forward+backward, best of {args.repeats}\n")
    print("| case | params | throughput | step (s) | peak mem (MB) | reference units |\n|---|---:|---:|---:|---:|---:|")
    for r in results:
        rate = f"{r['throughput']:,.0f}" if r["throughput"] >= 100 else f"{r['throughput']:.1f}"
        case = r["case"] + (f" ({r['voxels']:,} voxels)" if "voxels" in r else "")
        print(f"| {case} | {r['params'] / 1e6:.2f} M | {rate} {r['unit']} | {r['seconds']:.3f} "
              f"| {r['peak_mem_mb']:,.0f} | {r['reference_units']:.2f} |")


if __name__ == "__main__":
    main()
