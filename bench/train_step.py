#!/usr/bin/env python
"""Benchmark: optimiser steps/s and peak memory of stage 1 (with and without the teacher cache) and stage 2.

Each variant runs in its own child process (so its peak memory is its own) on the same pre-collated
batches: one warm-up pass over them (it fills the teacher cache), then ``--passes`` timed passes.
The ratio that matters is stage 1 with the cache over stage 1 without it (target: >= 2x).

  python bench/train_step.py --info-dir data/synthetic/infos            # CPU
  python bench/train_step.py --info-dir ... --device cuda                # on a GPU
Writes bench/results/train_step.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "stage1 (no cache)": ["method.name=stage1", "method.teacher_cache=false"],
    "stage1 (teacher cache)": ["method.name=stage1", "method.teacher_cache=true"],
    "stage2": ["method.name=stage2", "data.conditions=[all]"],
}


def child(args: argparse.Namespace) -> None:
    """Run one variant and print a JSON line with its numbers."""
    import torch

    from collab_distill.config import load_config
    from collab_distill.data.collate import Collate
    from collab_distill.data.dataset import PairedDataset
    from collab_distill.engine.optim import build_optimizer
    from collab_distill.methods.registry import build_method

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(REPO / "configs" / "stage1" / "synthetic.yaml",
                      [f"data.info_dir={args.info_dir}", *args.overrides])
    device = torch.device(args.device)
    dataset = PairedDataset(cfg.data, seed=0)
    collate = Collate(cfg.data.voxel_size)
    n = min(len(dataset), args.batches * args.batch_size)
    batches = [collate([dataset[i] for i in range(j, j + args.batch_size)]) for j in range(0, n, args.batch_size)]
    from accelerate.utils import send_to_device

    batches = [send_to_device(b, device) for b in batches]
    method = build_method(cfg).to(device)
    method.train()
    optimizer = build_optimizer(method, cfg.optim)

    def step(batch: dict) -> None:
        out = method(batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for batch in batches:  # warm-up: spconv algorithm tuning, the teacher cache
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.passes):
        for batch in batches:
            step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps({"steps_per_s": args.passes * len(batches) / seconds, "peak_mib": peak,
                      "memory": "cuda max allocated" if device.type == "cuda" else "process max RSS",
                      "steps": args.passes * len(batches), "batch_size": args.batch_size}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--info-dir", type=Path, required=True, help="prepared info files (train split)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--batches", type=int, default=4, help="distinct batches per pass")
    parser.add_argument("--passes", type=int, default=2, help="timed passes over the batches")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train_step.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="config overrides for every variant")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        stage1 = Path(tmp) / "stage1"
        # stage 2 needs stage-1 weights of the same architecture: export an untrained stage 1 quickly.
        from collab_distill.config import load_config
        from collab_distill.methods.registry import build_method

        cfg = load_config(REPO / "configs" / "stage1" / "synthetic.yaml", [f"data.info_dir={args.info_dir}",
                                                                            *args.overrides])
        build_method(cfg).export(stage1 / "weights")
        for name, extra in VARIANTS.items():
            cmd = [sys.executable, __file__, "--child", "--info-dir", str(args.info_dir), "--device", args.device,
                   "--batch-size", str(args.batch_size), "--batches", str(args.batches), "--passes",
                   str(args.passes), "--threads", str(args.threads), *args.overrides, *extra,
                   f"method.point_weights={stage1 / 'weights'}"]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            if proc.returncode:
                raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    base = results["stage1 (no cache)"]["steps_per_s"]
    for r in results.values():
        r["speedup_vs_stage1_no_cache"] = r["steps_per_s"] / base
    report = {"device": args.device, "info_dir": str(args.info_dir), "overrides": args.overrides,
              "threads": args.threads, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"device {args.device}, batch {args.batch_size}, {args.threads} thread(s)\n")
    print("| variant | steps/s | vs stage1 no cache | peak MiB |\n|---|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['steps_per_s']:.3f} | {r['speedup_vs_stage1_no_cache']:.2f}x | {r['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
