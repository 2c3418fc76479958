#!/usr/bin/env python
"""GPU check for the nuScenes configs (issue 15): the shipped configs/nuscenes/vit_s14/ runs, one training step
at a time, on a GPU, with random weights (no network) on a small generated world.

Prepared for a session that has a GPU; never needed by the tests. One command:

  python bench/gpu_check.py                       # on a GPU: about 2-4 min; bench/results/gpu_check.json
  python bench/gpu_check.py --models vit_s14 vit_b14 --passes 10
  python bench/gpu_check.py --tiny                # CPU smoke run of the same code (~1-2 min on one core)
  python bench/gpu_check.py --load-only --device cpu   # the data path at the shipped sizes, on a CPU

What it does, in one process:

1. generates one clear scene of ``--samples`` keyframes, six cameras at nuScenes' 1600x900 (a JPEG costs
   what a real one does to decode) with LiDAR sweeps, and prepares it (bench/teacher_store.py's world);
2. per model, loads ``configs/nuscenes/<model>/{stage1,stage2}.yaml`` as shipped (bf16, 10 sweeps, the
   SpUNet-sized encoder at 0.05 m, six cameras, uint8 images, the per-GPU batch of 8 GPUs:
   ``train.batch_size / 8`` samples), pointed at the world with ``model.image.weights=random``;
3. builds stage 1's teacher-feature store (timed: images/s of the teacher under autocast);
4. times these variants, each on the same pre-collated batches moved to the device as the trainer moves
   them (pinned, ``non_blocking``, uint8 images made float there), a warm-up pass (spconv's algorithm
   tuning), then ``--passes`` timed passes: forward under bf16 autocast, backward, optimiser step,
   each phase synchronised:

   * ``stage1 live``: the frozen ViT runs on the six images in the step (no store);
   * ``stage1 store``: the maps come from the store;
   * ``stage2``: a stage-2 step (student ViT trained, teacher and stage-1 LiDAR encoder frozen;
     the stage-1 weights are an untrained export of the same architecture);
   * ``stage2 ckpt``: the same with ``model.image.grad_checkpointing=true``;

5. times the loading on one CPU core, in this process (``dataset[i]`` plus the collate: JPEG decoding or
   store reading, the sweeps, projection, voxelisation), for stage 1 live, stage 1 with the store and
   stage 2, with the LiDAR points per sample, and from it the DataLoader workers one GPU needs to keep
   up: load seconds per sample x samples per step / step seconds. ``--load-only`` does the store build
   and this part only (no training step, cheap on a CPU at the shipped sizes).

It prints each result as it comes and rewrites the JSON after each one, so a run cut short keeps what it
measured. Peak memory is ``torch.cuda.max_memory_allocated`` per variant (reset before each).
``--tiny`` (the default on a machine without CUDA) swaps in the CPU presets (tiny ViT at 112x224, the
small LiDAR encoder at 0.1 m, 3 sweeps, no mixed precision, 2 keyframes, 1 pass): it checks the code
path, its numbers mean nothing for a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

if TYPE_CHECKING:  # torch is imported in main(), after the thread settings
    import torch

MODELS = ("vit_s14", "vit_b14")
TARGET_GPUS = 8       # the nuScenes configs' total batch is sized for 8 GPUs: batch_size / 8 per GPU
TINY = ["model.image.name=vit_tiny_patch14_cpu", "data.image_size=[112,224]", "data.voxel_size=0.1",
        "data.nsweeps=3", "model.point.stem_width=16", "model.point.enc_widths=[16,32,64,64]",
        "model.point.enc_depths=[1,1,1,1]", "model.point.dec_widths=[64,32,32,32]",
        "model.point.dec_depths=[1,1,1,1]", "train.mixed_precision='no'"]


def load_run(model: str, method: str, info_dir: Path, extra: list[str], tiny: bool) -> Any:
    """``configs/nuscenes/<model>/<method>.yaml`` pointed at the generated world, random weights."""
    from collab_distill.config import load_config

    overrides = [f"data.info_dir={info_dir}", "model.image.weights=random", "data.num_workers=0",
                 *(TINY if tiny else []), *extra]
    return load_config(REPO / "configs" / "nuscenes" / model / f"{method}.yaml", overrides)


def per_gpu_batch(cfg: Any) -> int:
    """Samples per GPU and micro-step of a config sized for :data:`TARGET_GPUS` GPUs."""
    return max(1, cfg.train.batch_size // (TARGET_GPUS * cfg.train.grad_accum))


class RunData:
    """A config's dataset, collate and per-GPU batch, as a training process reads them."""

    def __init__(self, cfg: Any) -> None:
        from collab_distill.data.collate import Collate
        from collab_distill.data.dataset import PairedDataset
        from collab_distill.methods.registry import method_class

        self.batch = per_gpu_batch(cfg)
        self.dataset = PairedDataset(cfg.data, seed=0, **method_class(cfg.method.name).dataset_options(cfg))
        self.collate = Collate(cfg.data.voxel_size)

    def batches(self, samples: int) -> list[dict]:
        """Collated per-GPU batches covering ``samples`` samples (cycling through the dataset)."""
        keys = [[(i * self.batch + j) % len(self.dataset) for j in range(self.batch)]
                for i in range(max(1, samples // self.batch))]
        return [self.collate([self.dataset[k] for k in ks]) for ks in keys]

    def loading(self, samples: int) -> dict[str, float]:
        """Loading on one core in this process (``dataset[i]`` and the collate: images or stored maps, the
        sweeps, projection, voxels): seconds and LiDAR points per sample."""
        n = min(samples, len(self.dataset))
        t0, points = time.perf_counter(), 0
        for start in range(0, n, self.batch):
            batch = self.collate([self.dataset[i] for i in range(start, min(n, start + self.batch))])
            points += len(batch["points"]) if "points" in batch else 0
        return {"load_s_per_sample_one_core": (time.perf_counter() - t0) / n, "points_per_sample": points / n}


class Variant:
    """One method built from a config with its optimiser and device batches; :meth:`step` times one step."""

    def __init__(self, cfg: Any, data: RunData, device: torch.device, samples: int) -> None:
        import torch
        from accelerate.utils import send_to_device

        from collab_distill.engine.optim import build_optimizer
        from collab_distill.methods.common import float_images
        from collab_distill.methods.registry import build_method

        self.device, self.batch = device, data.batch
        # the autocast dtype (fp16 without a loss scaler: the same work, and only the time is measured)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.mixed_precision)
        cuda = device.type == "cuda"
        self.batches = [float_images(send_to_device(self._pinned(b, cuda), device, non_blocking=True))
                        for b in data.batches(samples)]
        torch.manual_seed(cfg.experiment.seed)
        self.method = build_method(cfg).to(device).train()
        self.optimizer = build_optimizer(self.method, cfg.optim)
        self.sync: Callable[[], None] = torch.cuda.synchronize if cuda else (lambda: None)

    @staticmethod
    def _pinned(batch: dict, cuda: bool) -> dict:
        return {k: v.pin_memory() if cuda and hasattr(v, "pin_memory") else v for k, v in batch.items()}

    def step(self, batch: dict) -> list[float]:
        """One optimiser step; the seconds of its forward (under autocast), backward and optimiser phases."""
        import torch

        t0 = time.perf_counter()
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            loss = self.method(batch).loss
        self.sync()
        t1 = time.perf_counter()
        loss.backward()
        self.sync()
        t2 = time.perf_counter()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.sync()
        return [t1 - t0, t2 - t1, time.perf_counter() - t2]


def time_variant(variant: Variant, passes: int) -> dict[str, Any]:
    """Warm-up pass, then ``passes`` timed passes over the variant's batches; step times and peak memory."""
    import torch

    cuda = variant.device.type == "cuda"
    for batch in variant.batches:
        variant.step(batch)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    phases = [variant.step(batch) for _ in range(passes) for batch in variant.batches]
    steps = [sum(p) for p in phases]
    return {"samples_per_step": variant.batch,
            "images_per_step": int(variant.batches[0].get("image_sample", torch.empty(0)).numel()),
            "steps": len(steps), "median_step_s": statistics.median(steps), "mean_step_s": sum(steps) / len(steps),
            "forward_s": statistics.median(p[0] for p in phases), "backward_s": statistics.median(p[1] for p in phases),
            "optimizer_s": statistics.median(p[2] for p in phases),
            "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}


def release(variant: Variant) -> None:
    """Free a variant's device memory before the next one is built."""
    import gc

    import torch

    del variant.method, variant.optimizer, variant.batches
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_model(model: str, info_dir: Path, work: Path, args: argparse.Namespace, device: torch.device,
                record: Callable[[str, dict], None]) -> None:
    """Store build, the four step variants and the loading of one model; each result goes to ``record``."""
    from collab_distill.data.feature_store import FeatureStore
    from collab_distill.engine.teacher_store import build_teacher_store
    from collab_distill.methods.registry import build_method

    store, stage1_weights = work / f"{model}_store", work / f"{model}_stage1" / "weights"
    live_cfg = load_run(model, "stage1", info_dir, ["method.teacher_store=''", *args.overrides], args.tiny)
    t0 = time.perf_counter()
    build_teacher_store(live_cfg, store, batch_size=args.store_batch, progress=False)
    seconds, rows = time.perf_counter() - t0, FeatureStore(store).rows
    record(f"{model} store build", {"images": rows, "seconds": seconds, "images_per_s": rows / seconds})
    if not args.load_only:
        build_method(live_cfg).export(stage1_weights)   # stage 2 reads an (untrained) stage 1 of this architecture
    variants = {
        "stage1 live": live_cfg,
        "stage1 store": load_run(model, "stage1", info_dir, [f"method.teacher_store={store}", *args.overrides],
                                 args.tiny),
        "stage2": load_run(model, "stage2", info_dir, [f"method.point_weights={stage1_weights}", *args.overrides],
                           args.tiny),
        "stage2 ckpt": load_run(model, "stage2", info_dir, [f"method.point_weights={stage1_weights}",
                                                            "model.image.grad_checkpointing=true", *args.overrides],
                                args.tiny),
    }
    for name, cfg in variants.items():
        data = RunData(cfg)
        result = {} if name == "stage2 ckpt" else data.loading(args.samples)   # stage 2's data
        if not args.load_only:
            variant = Variant(cfg, data, device, args.samples)
            result.update(time_variant(variant, args.passes))
            release(variant)
            if "load_s_per_sample_one_core" in result:
                result["workers_to_keep_up"] = (result["load_s_per_sample_one_core"] * result["samples_per_step"]
                                                / result["median_step_s"])
        if result:
            record(f"{model} {name}", result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=["vit_s14"])
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when available)")
    parser.add_argument("--tiny", action="store_true", help="CPU presets, 2 keyframes, 1 pass (default without CUDA)")
    parser.add_argument("--samples", type=int, default=0, help="keyframes of the world (default 8; --tiny 2)")
    parser.add_argument("--passes", type=int, default=0, help="timed passes over the batches (default 5; --tiny 1)")
    parser.add_argument("--store-batch", type=int, default=24, help="images per teacher pass of the store build")
    parser.add_argument("--info-dir", type=Path, help="a prepared world instead of generating one")
    parser.add_argument("--load-only", action="store_true",
                        help="only the store build and the loading per sample (no training step: cheap on a CPU)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "gpu_check.json")
    parser.add_argument("overrides", nargs="*", help="config overrides for every variant (key=value)")
    args = parser.parse_args()

    from collab_distill.threads import set_thread_defaults

    set_thread_defaults()
    import torch
    from stall import cpu_model, write_atomic
    from teacher_store import make_world

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    args.tiny = args.tiny or (device.type != "cuda" and not args.load_only)
    args.samples = args.samples or (2 if args.tiny else 8)
    args.passes = args.passes or (1 if args.tiny else 5)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "tiny": args.tiny, "models": args.models, "samples": args.samples, "passes": args.passes,
        "overrides": args.overrides, "torch": torch.__version__, "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": {}}
    start = time.perf_counter()

    def record(name: str, result: dict) -> None:
        report["results"][name] = result
        report["seconds"] = time.perf_counter() - start
        write_atomic(args.out, json.dumps(report, indent=2) + "\n")
        print(f"[{report['seconds']:6.0f} s] {name}: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()), flush=True)

    print(f"device {report['device']} ({'tiny CPU presets' if args.tiny else 'configs/nuscenes as shipped'}), "
          f"models {' '.join(args.models)}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        info_dir = args.info_dir
        if info_dir is None:
            info_dir = make_world(Path(tmp) / "world", args.samples)
            record("world", {"keyframes": args.samples, "seconds": time.perf_counter() - start})
        for model in args.models:
            check_model(model, info_dir, Path(tmp), args, device, record)
    results = report["results"]
    steps = {name: r for name, r in results.items() if "median_step_s" in r}
    if steps:
        print("\n| step | samples (images) per GPU | median step | fwd / bwd / optim | peak MiB |\n|---|---:|---:|---|---:|")
        for name, r in steps.items():
            peak = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
            print(f"| {name} | {r['samples_per_step']} ({r['images_per_step']}) | {r['median_step_s']:.3f} s | "
                  f"{r['forward_s']:.3f} / {r['backward_s']:.3f} / {r['optimizer_s']:.3f} | {peak} |")
    print("\n| data of | LiDAR points per sample | load per sample, 1 core | workers to keep up one GPU |\n"
          "|---|---:|---:|---:|")
    for name, r in results.items():
        if "load_s_per_sample_one_core" in r:
            workers = f"{r['workers_to_keep_up']:.1f}" if "workers_to_keep_up" in r else "-"
            print(f"| {name} | {r['points_per_sample']:.0f} | {r['load_s_per_sample_one_core']:.3f} s | {workers} |")
    print(f"\n{report['seconds']:.0f} s in all; wrote {args.out}")


if __name__ == "__main__":
    main()
