#!/usr/bin/env python
"""Benchmark: cost of one ASVP perturbation (collab_distill.defense.perturb) per solver on the CPU.

Shapes: the restoration study's UNet features (training crops and full test images) and ViT token
sequences (the CPU teacher and a DINOv2-S-sized one). Each solver is timed with a fixed k = 1 and
with the adaptive rule (lowrank: max_k = 4), and compared with the ``svd`` result: the largest
deviation ``max |y - y_svd| / max |y_svd|``.

Usage:
  python bench/asvp.py [--repeats 5] [--threads 1]
Writes bench/results/asvp.json and prints a Markdown table (best of --repeats, ms per call).
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from collab_distill.defense import ASVPConfig, perturb

from _timing import best_ms

REPO = Path(__file__).resolve().parents[1]
SHAPES = {
    "UNet mid, 8 crops 48x48 (8, 64, 12, 12)": (8, 64, 12, 12),
    "UNet dec1, 8 crops 48x48 (8, 32, 24, 24)": (8, 32, 24, 24),
    "UNet mid, 6 images 224x128 (6, 64, 32, 56)": (6, 64, 32, 56),
    "UNet dec1, 6 images 224x128 (6, 32, 64, 112)": (6, 32, 64, 112),
    "ViT-tiny tokens, 8 x 126x224 (8, 145, 192)": (8, 145, 192),
    "ViT-S tokens, 8 x 224x448 (8, 513, 384)": (8, 513, 384),
}


def features(shape: tuple[int, ...]) -> torch.Tensor:
    """GELU-like features: a shared positive mean plus noise (the top direction dominates, as in real maps)."""
    g = torch.Generator().manual_seed(0)
    return torch.nn.functional.gelu(torch.randn(shape, generator=g) + 0.5)


def run(repeats: int) -> dict:
    rows = {}
    for label, shape in SHAPES.items():
        x = features(shape)
        row = {}
        for rule, base in (("k=1", dict(k=1)), ("adaptive", dict(k=0, energy=0.9, max_k=4))):
            reference = perturb(x, ASVPConfig(h=2.0, solver="svd", **base))
            for solver in ("svd", "gram", "lowrank"):
                cfg = ASVPConfig(h=2.0, solver=solver, **base)
                y = perturb(x, cfg)
                row[f"{solver} {rule}"] = {
                    "ms": best_ms(lambda: perturb(x, cfg), repeats),
                    "deviation": ((y - reference).abs().max() / reference.abs().max()).item()}
        rows[label] = row
    return {"threads": torch.get_num_threads(), "torch": torch.__version__, "cpu": platform.processor(),
            "repeats": repeats, "results": rows}


def markdown(result: dict) -> str:
    columns = list(next(iter(result["results"].values())))
    lines = ["| features | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for label, row in result["results"].items():
        lines.append(f"| {label} | " + " | ".join(f"{row[c]['ms']:.1f} ({row[c]['deviation']:.0e})" for c in columns)
                     + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = run(args.repeats)
    out = REPO / "bench" / "results" / "asvp.json"
    out.write_text(json.dumps(result, indent=1))
    print(markdown(result))
    print(f"\nms per call, best of {args.repeats} ({result['threads']} thread(s)); in brackets the largest "
          f"deviation from the svd solver relative to the largest value. Written to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
