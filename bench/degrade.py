#!/usr/bin/env python
"""Benchmark: cost of every degradation (collab_distill.data.degrade) on the CPU.

Images: one batch of (8, 3, 224, 448) float32 at severity 3 (fog with and without a depth map),
against a baseline in the same run: ``images.clone()`` (memory traffic only) and ``images * 0.5 +
0.25`` (one elementwise op), so the ratios carry across machines. LiDAR: one 32-beam scan of about
35k points, x, y, z, intensity, ring, at severity 3.

Usage:
  python bench/degrade.py [--batch 8] [--height 224] [--width 448] [--repeats 5] [--threads 2]
Writes bench/results/degrade.json and prints a Markdown table (best of --repeats, ms per call).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
from pathlib import Path

import torch

from collab_distill.data.degrade import (
    available_image_degradations,
    available_lidar_degradations,
    degrade_image,
    degrade_lidar,
)

from _timing import best_ms

REPO = Path(__file__).resolve().parents[1]


def street_scan(beams: int = 32, azimuths: int = 1090, seed: int = 0) -> torch.Tensor:
    """``(beams * azimuths, 5)`` scan of a ground plane and walls at 5-75 m (x, y, z, intensity, ring)."""
    g = torch.Generator().manual_seed(seed)
    elevation = torch.deg2rad(torch.linspace(-30, 10, beams))[:, None].expand(beams, azimuths)
    azimuth = torch.linspace(0, 2 * math.pi, azimuths)[None].expand(beams, azimuths)
    ground = torch.where(elevation < 0, 1.8 / torch.sin(-elevation).clamp_min(1e-3), torch.inf)
    distance = torch.minimum(ground, 5 + 70 * torch.rand(beams, azimuths, generator=g))
    return torch.stack([distance * torch.cos(elevation) * torch.cos(azimuth),
                        distance * torch.cos(elevation) * torch.sin(azimuth),
                        distance * torch.sin(elevation),
                        255 * torch.rand(beams, azimuths, generator=g),
                        torch.arange(beams, dtype=torch.float32)[:, None].expand(beams, azimuths)], -1).reshape(-1, 5)


def run(batch: int, height: int, width: int, repeats: int, severity: int = 3) -> dict:
    images = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(0))
    depth = torch.linspace(80.0, 3.0, height)[:, None].expand(batch, 1, height, width).contiguous()
    image_ms = {"baseline: clone": best_ms(images.clone, repeats),
                "baseline: x*0.5+0.25": best_ms(lambda: images * 0.5 + 0.25, repeats)}
    for name in available_image_degradations():
        image_ms[name] = best_ms(lambda: degrade_image(images, name, severity, generator=0), repeats)
    image_ms["fog (with depth)"] = best_ms(lambda: degrade_image(images, "fog", severity, 0, depth), repeats)
    points = street_scan()
    lidar_ms = {name: best_ms(lambda: degrade_lidar(points, name, severity, generator=0), repeats)
                for name in available_lidar_degradations()}
    return {"image_shape": [batch, 3, height, width], "points": len(points), "severity": severity,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "cpu": platform.processor(),
            "image_ms": image_ms, "lidar_ms": lidar_ms}


def markdown(result: dict) -> str:
    base = result["image_ms"]["baseline: x*0.5+0.25"]
    shape = "x".join(map(str, result["image_shape"]))
    lines = [f"| image degradation ({shape}, severity {result['severity']}) | ms / batch | x elementwise op |",
             "|---|---:|---:|"]
    lines += [f"| {name} | {ms:.1f} | {ms / base:.1f} |" for name, ms in result["image_ms"].items()]
    lines += ["", f"| LiDAR degradation ({result['points']} points) | ms / scan |", "|---|---:|"]
    lines += [f"| {name} | {ms:.2f} |" for name, ms in result["lidar_ms"].items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--height", type=int, default=224)
    parser.add_argument("--width", type=int, default=448)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "degrade.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = run(args.batch, args.height, args.width, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
