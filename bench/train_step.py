#!/usr/bin/env python
"""Benchmark: optimiser steps/s and peak memory of stage 1 (live teacher, and teacher maps from a
teacher-feature store) and stage 2.

Each variant runs in its own child process (so its peak memory is its own) on the same pre-collated
batches: one warm-up pass over them, then ``--passes`` timed passes.
The variants run one after the other ``--rounds`` times (A B C A B C ...), so that a busy spell of a
shared CPU does not land on one variant only; steps/s is total timed steps over total timed seconds,
and the median step time is reported too. Each step is broken down into the forward passes of the
encoders (timed with forward hooks), the rest of the forward pass (feature sampling,
head, loss), the backward pass and the optimiser step. The ratio that matters is stage 1 with the
store over stage 1 with the live teacher (target: >= 2x; the data path with and without images is
bench/teacher_store.py's). The 1-minute load average around each child is
recorded: on a CPU shared with other jobs the absolute numbers move a lot, the ratio less.

  python bench/train_step.py --info-dir data/synthetic/infos            # CPU
  python bench/train_step.py --info-dir ... --device cuda                # on a GPU
Writes bench/results/train_step.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # torch is imported inside the functions, after the thread settings
    import torch

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "stage1 (live teacher)": ["method.name=stage1", "method.teacher_store=''"],
    "stage1 (teacher store)": ["method.name=stage1", "method.teacher_store={store}"],  # main() builds the store
    "stage2": ["method.name=stage2", "data.conditions=[all]", "method.point_weights={stage1}"],  # an untrained stage 1
}
ENCODERS = ("teacher", "student", "point_encoder")      # modules whose forward passes are timed
PHASES = ("forward", "backward", "optimizer")


def timed_forwards(method: torch.nn.Module, sync: Callable[[], None]) -> dict[str, float]:
    """Register forward hooks on the :data:`ENCODERS` that ``method`` has (``sync`` waits for the
    device before each clock reading); returns the dict their forward seconds accumulate into (keys
    ``"<name> forward"``)."""
    totals: dict[str, float] = {}
    for name in ENCODERS:
        module = getattr(method, name, None)
        if module is None:
            continue
        key = f"{name} forward"
        totals[key] = 0.0
        start: list[float] = []
        def begin(*_, start: list[float] = start) -> None:
            sync()
            start.append(time.perf_counter())

        def done(*_, key: str = key, start: list[float] = start) -> None:
            sync()
            totals[key] += time.perf_counter() - start.pop()

        module.register_forward_pre_hook(begin)

        module.register_forward_hook(done)
    return totals


def build_step(info_dir: Path, overrides: list[str], n_batches: int, batch_size: int, device_name: str
               ) -> tuple[Callable[[dict], list[float]], list[dict], torch.nn.Module, Callable[[], None]]:
    """The method of ``configs/stage1/synthetic.yaml`` + ``overrides`` (seed 0) with its optimiser, and
    ``n_batches`` pre-collated batches of ``batch_size`` samples on ``device_name``. Returns ``(step,
    batches, method, sync)``: ``step(batch)`` runs one optimiser step and returns the seconds of its
    forward, backward and optimiser phases; ``sync()`` waits for the device."""
    import torch
    from accelerate.utils import send_to_device

    from collab_distill.config import load_config
    from collab_distill.data.collate import Collate
    from collab_distill.data.dataset import PairedDataset
    from collab_distill.engine.optim import build_optimizer
    from collab_distill.methods.registry import build_method, method_class

    torch.manual_seed(0)
    cfg = load_config(REPO / "configs" / "stage1" / "synthetic.yaml", [f"data.info_dir={info_dir}", *overrides])
    device = torch.device(device_name)
    dataset = PairedDataset(cfg.data, seed=0, **method_class(cfg.method.name).dataset_options(cfg))
    collate = Collate(cfg.data.voxel_size)
    n = min(len(dataset), n_batches * batch_size)
    batches = [send_to_device(collate([dataset[i] for i in range(j, j + batch_size)]), device)
               for j in range(0, n, batch_size)]
    method = build_method(cfg).to(device)
    method.train()
    optimizer = build_optimizer(method, cfg.optim)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step(batch: dict) -> list[float]:
        """One optimiser step; returns the seconds of its forward, backward and optimiser phases."""
        t0 = time.perf_counter()
        out = method(batch)
        sync()
        t1 = time.perf_counter()
        out.loss.backward()
        sync()
        t2 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        return [t1 - t0, t2 - t1, time.perf_counter() - t2]

    return step, batches, method, sync


def child(args: argparse.Namespace) -> None:
    """Run one variant and print a JSON line with its numbers."""
    import torch

    torch.set_num_threads(args.threads)
    step, batches, method, sync = build_step(args.info_dir, args.overrides, args.batches, args.batch_size,
                                             args.device)
    device = torch.device(args.device)
    for batch in batches:  # warm-up: spconv algorithm tuning
        step(batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    forwards = timed_forwards(method, sync)
    phases = [step(batch) for _ in range(args.passes) for batch in batches]
    steps = len(phases)
    seconds = sum(map(sum, phases))
    breakdown = {name: sum(p[i] for p in phases) / steps for i, name in enumerate(PHASES)}
    encoders = {k: v / steps for k, v in forwards.items()}
    breakdown = {**encoders, "rest of forward": breakdown["forward"] - sum(encoders.values()),
                 "backward": breakdown["backward"], "optimizer": breakdown["optimizer"]}
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps({"seconds": seconds, "steps": steps, "step_seconds": [sum(p) for p in phases],
                      "breakdown_s": breakdown, "peak_mib": peak,
                      "memory": "cuda max allocated" if device.type == "cuda" else "process max RSS",
                      "batch_size": args.batch_size}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--info-dir", type=Path, required=True, help="prepared info files (train split)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--batches", type=int, default=4, help="distinct batches per pass")
    parser.add_argument("--passes", type=int, default=2, help="timed passes over the batches")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="times the variants run, interleaved")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train_step.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="config overrides for every variant")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        stage1, store = Path(tmp) / "stage1", Path(tmp) / "teacher_store"
        # stage 2 needs stage-1 weights of the same architecture: export an untrained stage 1 quickly.
        from collab_distill.config import load_config
        from collab_distill.engine.teacher_store import build_teacher_store
        from collab_distill.methods.registry import build_method

        cfg = load_config(REPO / "configs" / "stage1" / "synthetic.yaml", [f"data.info_dir={args.info_dir}",
                                                                            "method.teacher_store=''", *args.overrides])
        build_method(cfg).export(stage1 / "weights")
        build_teacher_store(cfg, store, progress=False)  # the seed-0 teacher, as the children build it
        for _ in range(args.rounds):
            for name, extra in VARIANTS.items():
                cmd = [sys.executable, __file__, "--child", "--info-dir", str(args.info_dir), "--device",
                       args.device, "--batch-size", str(args.batch_size), "--batches", str(args.batches),
                       "--passes", str(args.passes), "--threads", str(args.threads), *args.overrides,
                       *(x.format(store=store, stage1=stage1 / "weights") for x in extra)]
                load_before = os.getloadavg()[0]
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
                if proc.returncode:
                    raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
                run = json.loads(proc.stdout.strip().splitlines()[-1])
                run["load_1min"] = [load_before, os.getloadavg()[0]]
                runs[name].append(run)
    results = {name: summarise(r) for name, r in runs.items()}
    base = results["stage1 (live teacher)"]
    for r in results.values():
        r["speedup_vs_stage1_live"] = r["steps_per_s"] / base["steps_per_s"]
        r["median_speedup_vs_stage1_live"] = r["steps_per_s_median"] / base["steps_per_s_median"]
    report = {"device": args.device, "info_dir": str(args.info_dir), "overrides": args.overrides,
              "threads": args.threads, "batches": args.batches, "passes": args.passes, "rounds": args.rounds,
              "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"device {args.device}, batch {args.batch_size}, {args.threads} thread(s), {args.rounds} round(s)\n")
    print("| variant | steps/s | vs stage1 live | median step | vs live (median) | peak MiB | load |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['steps_per_s']:.3f} | {r['speedup_vs_stage1_live']:.2f}x | "
              f"{r['median_step_s']:.2f} s | {r['median_speedup_vs_stage1_live']:.2f}x | {r['peak_mib']:.0f} | "
              f"{min(r['load_1min']):.1f}-{max(r['load_1min']):.1f} |")
    print("\nmean seconds per step:")
    for name, r in results.items():
        print(f"  {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in r["breakdown_s"].items()))


def summarise(runs: list[dict]) -> dict:
    """One variant's numbers over its rounds: steps/s (total steps over total seconds), the median step
    time, the mean per-step breakdown, the largest peak memory and the load averages seen."""
    steps = sum(r["steps"] for r in runs)
    step_seconds = [t for r in runs for t in r["step_seconds"]]
    median = statistics.median(step_seconds)
    return {"steps_per_s": steps / sum(r["seconds"] for r in runs), "median_step_s": median,
            "steps_per_s_median": 1.0 / median, "steps": steps,
            "breakdown_s": {k: sum(r["breakdown_s"][k] * r["steps"] for r in runs) / steps
                            for k in runs[0]["breakdown_s"]},
            "peak_mib": max(r["peak_mib"] for r in runs), "memory": runs[0]["memory"],
            "batch_size": runs[0]["batch_size"], "step_seconds": step_seconds,
            "load_1min": [x for r in runs for x in r["load_1min"]]}


if __name__ == "__main__":
    main()
