#!/usr/bin/env python
"""Benchmark: one training step's degraded view for the image-only baselines, batched on the images'
device (methods/views.py::degraded_view) against the per-image path it replaced (image by image, each
moved to the CPU and back), on the same images with the same per-image seeds, in one run.

A step is 96 images at 224x448 with the asymmetric baseline's degradations and severities; then, per
degradation at severity 3, the 96 images all with that degradation. Both paths give the same output
on the CPU (the largest difference is printed); JPEG is the torch codec in both. On the CPU the
batched path degrades a group CPU_CHUNK images at a time (collab_distill/data/degrade.py).

Usage:
  OMP_NUM_THREADS=1 python bench/degrade_batch.py [--images 96] [--height 224] [--width 448]
      [--repeats 3] [--device cpu]
Writes bench/results/degrade_batch.json (the CPU model, thread count and load average with the
times) and prints Markdown tables (best of --repeats, ms per step).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Sequence

import torch

from collab_distill.data.degrade import CPU_CHUNK, degrade_image
from collab_distill.methods.config import ImageDistillConfig
from collab_distill.methods.views import degraded_view, image_generator

from _timing import best_ms

REPO = Path(__file__).resolve().parents[1]


def per_image_view(batch: dict, names: Sequence[str], severities: Sequence[int], seed: int, view: str) -> torch.Tensor:
    """The path the batched view replaced: image by image on the CPU, each drawing its name, severity
    and values from its own generator, moved back to the images' device."""
    images = batch["images"]
    out = torch.empty_like(images)
    for i in range(len(images)):
        gen = image_generator(batch, i, seed, view)
        name = names[int(torch.randint(len(names), (1,), generator=gen))]
        severity = severities[int(torch.randint(len(severities), (1,), generator=gen))]
        out[i] = degrade_image(images[i:i + 1].cpu(), name, severity, gen)[0].to(images.device)
    return out


def make_batch(count: int, height: int, width: int, device: str) -> dict:
    """``count`` images of six cameras per sample, with the keys the views read."""
    cameras = ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT"]
    smooth = torch.rand(count, 3, height // 8, width // 8, generator=torch.Generator().manual_seed(0))
    images = torch.nn.functional.interpolate(smooth, size=(height, width), mode="bilinear", align_corners=False)
    return {"images": images.to(device), "image_sample": torch.arange(count) // 6, "epoch": 0,
            "tokens": [f"sample{s}" for s in range((count + 5) // 6)],
            "cameras": [cameras[i % 6] for i in range(count)]}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(count: int, height: int, width: int, repeats: int, device: str) -> dict:
    batch = make_batch(count, height, width, device)
    section = ImageDistillConfig()
    names, severities = list(section.degradations), list(section.severities)

    def timed(fn) -> float:
        return best_ms(lambda: (fn(), _sync(device)), repeats)

    load_before = os.getloadavg()
    step = {"batched": timed(lambda: degraded_view(batch, names, severities, 0, "student")),
            "per_image": timed(lambda: per_image_view(batch, names, severities, 0, "student"))}
    step_diff = float((degraded_view(batch, names, severities, 0, "student")
                       - per_image_view(batch, names, severities, 0, "student")).abs().max())
    per_name = {name: {"batched": timed(lambda: degraded_view(batch, [name], [3], 0, "student")),
                       "per_image": timed(lambda: per_image_view(batch, [name], [3], 0, "student"))}
                for name in names}
    return {"images": [count, 3, height, width], "device": device, "degradations": names, "severities": severities,
            "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "torch": torch.__version__, "cpu": _cpu_model(), "machine": platform.machine(), "cpu_chunk": CPU_CHUNK,
            "load_average": {"before": load_before, "after": os.getloadavg()},
            "step_ms": step, "step_ratio": step["per_image"] / step["batched"], "step_max_abs_diff": step_diff,
            "severity_3_ms": per_name}


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def markdown(result: dict) -> str:
    shape = "x".join(map(str, result["images"]))
    step = result["step_ms"]
    lines = [f"{shape} on {result['device']} ({result['cpu']}, {result['threads']} thread(s), load average "
             f"{result['load_average']['before'][0]:.1f} -> {result['load_average']['after'][0]:.1f})", "",
             "| path | ms / step | x batched |", "|---|---:|---:|",
             f"| per image (replaced) | {step['per_image']:.0f} | {result['step_ratio']:.2f} |",
             f"| batched | {step['batched']:.0f} | 1.00 |", "",
             f"largest difference between the two outputs: {result['step_max_abs_diff']:.2e}", "",
             "| all images with (severity 3) | per image ms | batched ms | ratio |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {t['per_image']:.0f} | {t['batched']:.0f} | {t['per_image'] / t['batched']:.2f} |"
              for name, t in result["severity_3_ms"].items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--height", type=int, default=224)
    parser.add_argument("--width", type=int, default=448)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "degrade_batch.json")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    result = run(args.images, args.height, args.width, args.repeats, args.device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(markdown(result))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
