#!/usr/bin/env python
"""Benchmark: memory per process at nuScenes v1.0-trainval's scale of the data path with the info store and
the teacher-feature store (``--part stage1``, issue 15) and of the probes with their stores (``--part
probes``, issue 16), against today's paths before them, measured the same way.

Targets (issues 15 and 16): peak memory per process flat in N (within 10 % from 1k to 28k train samples),
at most 3 GB per rank (stage 1) and per process (probes) at 28k.

One command: the stage-1 part about 4 minutes on 2 cores, the probe part about 8.5 (``--quick``: N = 1k and 7k). It generates a
small synthetic world once in a temporary folder (``configs/synthetic/tiny.yaml`` with nuScenes' 9
LiDAR sweeps between keyframes and 4 keyframes per scene) and prepares it; the pool is one train
record with a full chain of 9 previous sweeps (its 6 images, LiDAR and sweep files are real), so each
step does the same work at every N and only N changes. Per N
(1,000, 7,000 and 28,130 samples: trainval's train split) the pool is tiled to N records in the real
schema with distinct tokens (``bench/_scale_data.py::tile_infos``), written as the JSON export and the
info store by prepare's writers, and then, each in a fresh process whose whole tree is sampled every
20 ms (``bench/_memory.py``: PSS and USS from ``/proc/<pid>/smaps_rollup`` at each new RSS maximum and
every second, the peak RSS from ``VmHWM``):

1. **info loading**: a ``PairedDataset`` on the info store, then 64 records read at random; and today's
   path, the same dataset holding the parsed JSON (``load_infos``, as before the store);
2. **a store build for a slice**: the real builder (``build_teacher_store``, 2 DataLoader workers) over
   all N x 6 rows of the tiny CPU teacher, computing only the first ``--slice`` images. The library's
   builder has no way to build part of a store, so the bench narrows the builder's image dataset
   (``engine.teacher_store.StoreImages``) to the slice; the build then stops at the progress check of
   ``finish_build``, and the bench marks the rest written with the library's ``ShardWriter.commit``
   and completes it with ``finish_build``: the shards are sparse files of N x 6 rows of which only
   the slice is on disk, the rest holes that read as zeros. (What a ViT-S/14 store would take on disk
   is computed.);
3. **a stage-1 slice**: ``--steps`` optimiser steps of stage 1 (all six cameras, total batch 4) under
   ``accelerate launch --num_processes 2`` on the CPU (gloo), 2 DataLoader workers per rank, reading
   the store (``run_training``, as ``tools/train_stage1.py``); and **today's path** the same way: every
   rank parses the JSON (its forked workers inherit the parsed records), decodes the JPEGs and runs the
   teacher, and keeps every teacher map it computes in a dict (the removed ``method.teacher_cache``,
   re-created here as it was: float16 on the CPU, keyed by (token, camera)). A few steps cannot fill
   that dict: its size after a full epoch (every rank sees N x 6 / 2 images) is **extrapolated** from
   the bytes per map, for the tiny teacher and for ViT-S/14 at 224x448.

The probe part (``bench/_scale_probes.py``) runs, per N, the 2D probes' training-view store build (the
library's ``probe_store`` over all N x 6 views of the tiny ViT, the first ``--slice`` views computed, the
rest completed as holes and empty target rows), the seg and depth heads (``--head-iterations`` each,
streamed from that store with 2 workers), the 3D probe's training-point store build (``build_point_store``
over N scans, ``--slice / 6`` computed) and its head (one epoch streamed from the store); and today's
paths, re-created as they were, on the slice: the 2D in-RAM feature bank with dense targets and the 3D
in-RAM features of every point, whose bytes per view / point are **extrapolated** to N (and to ViT-S/14
at 224x448, and to nuScenes' ~34k points per scan with the 96-channel encoder).

Printed per N: each process of each phase (``main``, ``launcher``, ``rank r``, ``... worker i``) with
its peak PSS, USS, anonymous PSS and peak RSS, today's path beside the store's; then, across N, the
largest process of each kind (the two ranks read different batches, so rank 0 and rank 1 trade
places between runs) and the verdict for each of PSS, USS and anonymous PSS. File-backed pages count
in a process's PSS and USS too: libraries (according to how many *other* processes on the machine map
them) and, if a store were memory-mapped, the store pages it has touched (page cache: clean, shared,
reclaimable; the stores now read rows with ``os.pread``, which maps none), so the
anonymous PSS is the measure of what a process itself holds (docs/benchmarks.md). The CPU model, load average and ``OMP_NUM_THREADS`` go with the numbers into
``bench/results/scale.json`` (``scale_stage1.json``, ``scale_probes.json`` with ``--part``).

  OMP_NUM_THREADS=1 python bench/scale.py                  # N = 1k, 7k, 28k; both parts
  OMP_NUM_THREADS=1 python bench/scale.py --part probes     # the probes only (bench/results/scale_probes.json)
  OMP_NUM_THREADS=1 python bench/scale.py --quick          # N = 1k, 7k
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from _memory import sample_until_exit  # noqa: E402  (bench/ helpers)
from _scale_data import tile_infos  # noqa: E402
from _scale_probes import CHILDREN as PROBE_CHILDREN  # noqa: E402
from stall import cpu_model, write_atomic  # noqa: E402

SIZES = (1_000, 7_000, 28_130)          # 28,130: v1.0-trainval's train keyframes
QUICK_SIZES = (1_000, 7_000)
CAMERAS = 6
PROCESSES, WORKERS = 2, 2
FLAT, RANK_LIMIT = 1.10, 3e9            # the targets: within 10 % from the smallest N to the largest; 3 GB per rank
VITS_MAP_BYTES = 384 * 16 * 32 * 2      # ViT-S/14 at 224x448: 512 patches x 384 x float16
VITS_VIEW_BYTES = VITS_MAP_BYTES + 224 * 448 * (1 + 4)   # today's 2D bank per view: the map, dense uint8 labels, float32 depth
NUSCENES_POINTS = 34_000                # LiDAR points of a nuScenes keyframe (the 3D probe's labelled scan)
POOL_SWEEPS = 9                         # nuScenes' previous sweeps per keyframe (MAX_SWEEPS)
POOL_RECORDS = 1                        # one keyframe's files: every N does the same work per step
NEW, TODAY = "store", "today"
PARTS = {  # part: {phase name: (path, child command, root role)}
    "stage1": {"info: store": (NEW, "info-store", "main"), "info: JSON": (TODAY, "info-json", "main"),
               "store build (slice)": (NEW, "build", "main"),
               "stage 1: store": (NEW, "stage1-store", "launcher"),
               "stage 1: today": (TODAY, "stage1-today", "launcher")},
    "probes": {"2D probe store build (slice)": (NEW, "probe-build", "main"),
               "2D probe heads: store": (NEW, "probe-heads", "main"),
               "2D probe: today (slice)": (TODAY, "probe-today", "main"),
               "3D probe store build (slice)": (NEW, "lidar-build", "main"),
               "3D probe head: store": (NEW, "lidar-head", "main"),
               "3D probe: today (slice)": (TODAY, "lidar-today", "main")},
}
PHASES = {name: phase for part in PARTS.values() for name, phase in part.items()}
# phases that leave nothing behind that changes the next run (no store build), so --repeats can rerun them
REPEATABLE = {"info-store", "info-json", "probe-heads", "probe-today", "lidar-head", "lidar-today"}
STAGE1 = ["data.conditions=[all]", "data.cameras=[all]", f"data.num_workers={WORKERS}", "train.batch_size=4",
          "train.log_every=1"]
MIB = 2**20


# --------------------------------------------------------------------------------------------
# Children: one phase each, in a fresh process (stage 1: every rank of an accelerate launch)
# --------------------------------------------------------------------------------------------
def stage1_config(args: argparse.Namespace, extra: list[str] = ()) -> Any:
    """The run config of every phase: configs/stage1/synthetic.yaml (tiny CPU teacher, 126x252) on the
    tiled info folder, every sample, all six cameras, 2 workers."""
    from collab_distill.config import load_config

    return load_config("configs/stage1/synthetic.yaml",
                       [f"data.info_dir={args.info_dir}", *STAGE1, f"train.max_steps={args.steps}",
                        f"experiment.output_dir={args.work / 'run'}", *extra])


def json_dataset_class() -> type:
    """``JsonDataset``: today's ``PairedDataset`` before the info store (defined on demand: torch-heavy)."""
    from collab_distill.data.dataset import PairedDataset
    from collab_distill.data.infos import load_infos

    class JsonDataset(PairedDataset):
        """``PairedDataset`` holding the split's records parsed from ``infos_<split>.json``, as before the
        info store: every process that builds it parses the whole file (``load_infos``) and keeps the
        selected ``SampleInfo`` list; DataLoader workers forked from it share those pages copy-on-write."""

        def __init__(self, cfg: Any, seed: int = 0, train: bool = True) -> None:
            super().__init__(cfg, seed, train)
            infos = load_infos(Path(cfg.info_dir) / f"infos_{cfg.split}.json", cfg.dataroot or None)
            self.samples = infos.filter(cfg.conditions)

    return JsonDataset


def caching_stage1_class() -> type:
    """``CachingStage1``: stage 1 with today's removed in-RAM teacher cache (torch-heavy, on demand)."""
    import torch

    from collab_distill.methods.stage1 import Stage1

    class CachingStage1(Stage1):
        """Stage 1 with the per-rank teacher cache removed by issue 15 (``method.teacher_cache``, as in
        ``methods/stage1.py`` before commit 2751d74): each map the teacher computes is kept, float16 on
        the CPU, in a dict keyed by (token, camera), and served from it when the image comes again."""

        def __init__(self, cfg: Any) -> None:
            super().__init__(cfg)
            self.cache: dict[tuple[str, str], torch.Tensor] = {}

        @torch.no_grad()
        def teacher_maps(self, batch: dict) -> torch.Tensor:
            keys = [(batch["tokens"][s], cam) for s, cam in zip(batch["image_sample"].tolist(), batch["cameras"])]
            missing = [i for i, k in enumerate(keys) if k not in self.cache]
            if missing:
                maps = self.teacher(batch["images"][missing]).patch[-1]
                for i, fmap in zip(missing, maps):
                    self.cache[keys[i]] = fmap.to(torch.float16).cpu()
            return torch.stack([self.cache[k] for k in keys]).to(batch["images"].device, torch.float32)

    return CachingStage1


def report(args: argparse.Namespace, **values: Any) -> None:
    """Write this process's results for the parent: ``<work>/<child>.<RANK>.json``."""
    write_atomic(args.work / f"{args.child}.{os.environ.get('RANK', '0')}.json", json.dumps(values))


def child_info(args: argparse.Namespace, json_path: bool) -> None:
    """Phase 1: the dataset of every sample (info store, or today's parsed JSON), then 64 records at random."""
    import numpy as np

    from collab_distill.data.dataset import PairedDataset

    cfg = stage1_config(args)
    start = time.perf_counter()
    dataset = (json_dataset_class() if json_path else PairedDataset)(cfg.data, seed=0, train=True)
    opened = time.perf_counter() - start
    for i in np.random.default_rng(0).integers(len(dataset), size=64):
        dataset.samples[int(i)]
    report(args, samples=len(dataset), open_s=opened, read_64_s=time.perf_counter() - start - opened)


def child_build(args: argparse.Namespace) -> None:
    """Phase 2: the real builder over all N x 6 rows, computing only the first ``--slice`` images; the
    rest is marked written (holes of the sparse shards) with the library's writer and completed."""
    import collab_distill.engine.teacher_store as builder
    from collab_distill.data.feature_store import FeatureStoreError, teacher_fields
    from collab_distill.data.shards import ShardWriter, finish_build, partial_path
    from collab_distill.data.shards import read_build_meta as build_meta

    limit = args.slice

    class SliceImages(builder.StoreImages):
        """The builder's images, the first ``--slice`` of this process's rows only."""

        def __len__(self) -> int:
            return min(limit, len(self.rows))

    builder.StoreImages = SliceImages   # the library cannot build part of a store (see the module docstring)
    cfg, store = stage1_config(args), args.work / "store"
    start = time.perf_counter()
    try:
        builder.build_teacher_store(cfg, store, batch_size=16, overwrite=True, progress=False)
    except FeatureStoreError as exc:   # finish_build: "shard 0 has <slice> of <rows> rows", as after a kill
        if f"has {limit} of" not in str(exc):
            raise
    built = time.perf_counter() - start
    folder = partial_path(store)
    meta = build_meta(folder)
    for rank in range(meta["processes"]):
        writer = ShardWriter(folder, rank, meta["processes"], meta["rows"], teacher_fields(meta["map_shape"]))
        writer.done = writer.size   # the rows after the slice: never written, holes that read as zeros
        writer.commit()
    finish_build(folder, store)
    report(args, rows=meta["rows"], map_shape=meta["map_shape"], computed=limit, build_s=built)


def child_stage1(args: argparse.Namespace, today: bool) -> None:
    """Phase 3, in every rank of an ``accelerate launch``: ``--steps`` stage-1 steps reading the store
    (``run_training``), or today's path (parsed JSON, live teacher, in-RAM cache)."""
    from collab_distill.data.collate import Collate
    from collab_distill.engine.run import run_training
    from collab_distill.engine.trainer import train

    rank = int(os.environ.get("RANK", "0"))
    out = args.work / f"run_{'today' if today else 'store'}"
    start = time.perf_counter()
    if not today:
        cfg = stage1_config(args, [f"method.teacher_store={args.work / 'store'}", f"experiment.output_dir={out}"])
        result = run_training(cfg, progress=False, overwrite=True)
        report(args, rank=rank, steps=result.steps, seconds=time.perf_counter() - start)
        return
    # today's stage 1 needed data.augment=false (the cache assumed the same pixels every epoch)
    cfg = stage1_config(args, ["data.augment=false", f"experiment.output_dir={out}"])
    dataset = json_dataset_class()(cfg.data, seed=cfg.experiment.seed, train=True)
    from accelerate.utils import set_seed

    set_seed(cfg.experiment.seed)
    method = caching_stage1_class()(cfg)
    result = train(method, dataset, Collate(cfg.data.voxel_size), cfg, progress=False, overwrite=True)
    maps = len(method.cache)
    nbytes = sum(t.numel() * t.element_size() for t in method.cache.values())
    report(args, rank=rank, steps=result.steps, seconds=time.perf_counter() - start, cached_maps=maps, cache_bytes=nbytes,
           map_bytes=nbytes // max(maps, 1), samples=len(dataset))


# --------------------------------------------------------------------------------------------
# The parent: data, phases, tables
# --------------------------------------------------------------------------------------------
def make_pool(root: Path) -> dict[str, Any]:
    """Generate and prepare the small world; returns its train info dict restricted to ``POOL_RECORDS``
    record(s) with a full chain of ``POOL_SWEEPS`` previous sweeps (a scene's first keyframe has none)."""
    import dataclasses

    from collab_distill.config import load_config
    from data_prep.nuscenes_infos import prepare
    from data_prep.synthetic.config import SyntheticConfig
    from data_prep.synthetic.generate import generate

    world = load_config(REPO / "configs" / "synthetic" / "tiny.yaml", schema=SyntheticConfig)
    world = dataclasses.replace(world, samples_per_scene=4, sweeps_per_keyframe=POOL_SWEEPS)
    generate(world, root, progress=False)
    prepare(root, world.version, root / "infos", workers=1, progress=False)
    info = json.loads((root / "infos" / "infos_train.json").read_text())
    return {**info, "samples": [r for r in info["samples"] if len(r["lidar"]["sweeps"]) == POOL_SWEEPS][:POOL_RECORDS]}


def write_infos(folder: Path, pool: dict[str, Any], n: int) -> dict[str, float]:
    """``folder/infos_train.json`` and ``folder/infos_train/`` of ``n`` tiled records; their sizes (MiB)."""
    from collab_distill.data.info_store import store_path, write_info_store

    info = tile_infos(pool, n)
    folder.mkdir(parents=True)
    write_atomic(folder / "infos_train.json", json.dumps(info))
    write_info_store(store_path(folder, "train"), info)
    store = sum(f.stat().st_size for f in store_path(folder, "train").iterdir())
    return {"json_mib": (folder / "infos_train.json").stat().st_size / MIB, "info_store_mib": store / MIB}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_phase(phase: str, args: argparse.Namespace, info_dir: Path, work: Path) -> dict[str, Any]:
    """Run one phase's child (or accelerate launch of it) with its tree monitored; peaks and results."""
    _, child, root = PHASES[phase]
    cmd = [__file__, "--child", child, "--info-dir", str(info_dir), "--work", str(work), "--steps", str(args.steps),
           "--slice", str(args.slice), "--head-iterations", str(args.head_iterations)]
    if root == "launcher":
        cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes",
               str(PROCESSES), "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision",
               "no", "--dynamo_backend", "no", *cmd]
    else:
        cmd = [sys.executable, *cmd]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(cmd, stdout=stderr, stderr=stderr, env=env, cwd=REPO)
        measured = sample_until_exit(proc.pid, proc.wait, root)
        if proc.returncode:
            stderr.seek(0)
            raise RuntimeError(f"{phase}: exit {proc.returncode}\n{stderr.read()[-4000:]}")
    return {**measured, "reports": [json.loads(f.read_text()) for f in sorted(work.glob(f"{child}.*.json"))]}


def measure_phase(phase: str, args: argparse.Namespace, info_dir: Path, work: Path) -> dict[str, Any]:
    """:func:`run_phase`, ``--repeats`` times for a :data:`REPEATABLE` phase: each process's peaks are then the
    median over the runs (a process's peak moves by some ten MiB from run to run: allocator and worker
    timing), the seconds and reports those of the first run."""
    runs = [run_phase(phase, args, info_dir, work)
            for _ in range(args.repeats if PHASES[phase][1] in REPEATABLE else 1)]
    if len(runs) == 1:
        return runs[0]
    roles = [role for role in runs[0]["processes"] if all(role in r["processes"] for r in runs)]
    def med(role: str, metric: str) -> float | None:
        values = [r["processes"][role].get(metric) for r in runs]
        numbers = [v for v in values if isinstance(v, (int, float))]
        return statistics.median(numbers) if numbers else None

    median = {role: {metric: med(role, metric) for metric in runs[0]["processes"][role]} for role in roles}
    return {**runs[0], "processes": median, "repeats": len(runs),
            "total_pss_peak": statistics.median(r["total_pss_peak"] for r in runs)}


def store_disk(work: Path) -> dict[str, float]:
    """Apparent and allocated size of the feature store's files (MiB)."""
    files = [f for f in (work / "store").iterdir() if f.is_file()]
    return {"feature_store_apparent_mib": sum(f.stat().st_size for f in files) / MIB,
            "feature_store_on_disk_mib": sum(f.stat().st_blocks * 512 for f in files) / MIB}


def cache_extrapolation(phase: dict[str, Any], n: int) -> dict[str, float]:
    """Today's per-rank teacher cache after a full epoch (N x 6 / P images per rank), from the measured
    bytes per map; also for ViT-S/14 at 224x448, and once every image is cached (several epochs)."""
    ranks = [r for r in phase["reports"] if "cache_bytes" in r]
    map_bytes = max(r["map_bytes"] for r in ranks)
    epoch_images = n * CAMERAS / PROCESSES
    return {"measured_maps_per_rank": max(r["cached_maps"] for r in ranks),
            "measured_cache_mib_per_rank": max(r["cache_bytes"] for r in ranks) / MIB,
            "map_bytes": map_bytes, "epoch_images_per_rank": epoch_images,
            "epoch_cache_gib_tiny": epoch_images * map_bytes / 2**30,
            "epoch_cache_gib_vits": epoch_images * VITS_MAP_BYTES / 2**30,
            "all_images_cache_gib_vits": n * CAMERAS * VITS_MAP_BYTES / 2**30}


METRICS = ("pss", "uss", "pss_anon", "rss_peak")


def kind(role: str) -> str:
    """A role without its numbers: ``rank 1 worker 0`` -> ``rank worker``."""
    return " ".join(word for word in role.split() if not word.isdigit())


def flatness(results: dict[str, Any], sizes: list[int]) -> dict[str, Any]:
    """Per phase and kind of process (main, launcher, rank, worker, rank worker; the largest of the
    processes of that kind, so the two ranks' different batches do not count as a change with N;
    helpers such as ``git`` left out): peak PSS, USS and anonymous PSS per N, and each one's ratio of
    the largest N to the smallest."""
    rows: dict[str, Any] = {}
    for phase in results[str(sizes[0])]["phases"]:
        kinds = {kind(role) for role in results[str(sizes[0])]["phases"][phase]["processes"] if "helper" not in role}
        for name in sorted(kinds, key=len):
            entry: dict[str, Any] = {"path": PHASES[phase][0]}
            for metric in METRICS:
                entry[metric] = [max((p[metric] for role, p in results[str(n)]["phases"][phase]["processes"].items()
                                      if kind(role) == name), default=None) for n in sizes]
                if entry[metric][0] and entry[metric][-1]:
                    entry[f"{metric}_ratio"] = entry[metric][-1] / entry[metric][0]
            rows[f"{phase} | {name}"] = entry
    return rows


def verdict(flat: dict[str, Any], results: dict[str, Any], sizes: list[int]) -> dict[str, Any]:
    """Flat, per metric: the store path's process with the largest ratio of the largest N to the smallest,
    and whether it is within ``FLAT``. Ranks: the largest peak PSS of a stage-1 rank at the largest N,
    at most ``RANK_LIMIT``."""
    new = {k: v for k, v in flat.items() if v["path"] == NEW and all(f"{m}_ratio" in v for m in METRICS)}
    out: dict[str, Any] = {}
    for metric in METRICS:
        worst = max(new, key=lambda k: new[k][f"{metric}_ratio"])
        ratio = new[worst][f"{metric}_ratio"]
        out[f"flat_{metric}"] = {"worst": worst, "ratio": ratio, "limit": FLAT, "met": ratio <= FLAT}
    largest = results[str(sizes[-1])]["phases"]
    if "stage 1: store" in largest:
        rank_pss = max(p["pss"] for role, p in largest["stage 1: store"]["processes"].items()
                       if role.startswith("rank") and " " not in role[len("rank "):])
        out["rank"] = {"n": sizes[-1], "max_rank_pss_bytes": rank_pss, "limit_bytes": RANK_LIMIT,
                       "met": rank_pss <= RANK_LIMIT}
    probes = [(f"{phase} | {role}", p["pss"]) for phase, (path, _, _) in PARTS["probes"].items() if path == NEW
              and phase in largest for role, p in largest[phase]["processes"].items() if "helper" not in role]
    if probes:
        worst = max(probes, key=lambda item: item[1])
        out["probe_process"] = {"n": sizes[-1], "worst": worst[0], "max_pss_bytes": worst[1], "limit_bytes": RANK_LIMIT,
                                "met": worst[1] <= RANK_LIMIT}
    return out


def mib(value: float | None) -> str:
    return "—" if value is None else f"{value / MIB:,.0f}"


def _process_rows(r: dict[str, Any]) -> list[str]:
    """Every process of every phase of one N."""
    out = ["| phase | path | process | peak PSS | peak USS | peak anon PSS | peak RSS | s |",
           "|---|---|---|---:|---:|---:|---:|---:|"]
    for phase, ph in r["phases"].items():
        path = PHASES[phase][0]
        for role, p in ph["processes"].items():
            out.append(f"| {phase} | {path} | {role} | {mib(p['pss'])} | {mib(p['uss'])} | "
                       f"{mib(p.get('pss_anon'))} | {mib(p['rss_peak'])} | {ph['seconds']:.0f} |")
        out.append(f"| {phase} | {path} | **all (sum of PSS)** | **{mib(ph['total_pss_peak'])}** | | | | |")
    return out


def _today_lines(r: dict[str, Any], steps: int) -> list[str]:
    """What the removed paths would hold at this N (extrapolated from what they held on the slice)."""
    out = []
    if "today_cache" in r:
        c = r["today_cache"]
        out += ["", f"Today's per-rank teacher cache: {c['measured_maps_per_rank']} maps "
                    f"({c['measured_cache_mib_per_rank']:.1f} MiB) after {steps} steps; **extrapolated** "
                    f"to a full epoch ({c['epoch_images_per_rank']:,.0f} images per rank): "
                    f"{c['epoch_cache_gib_tiny']:.2f} GiB with the tiny teacher ({c['map_bytes'] / 1024:.0f} KiB per "
                    f"map), {c['epoch_cache_gib_vits']:.1f} GiB with ViT-S/14 at 224x448; every image (after a few "
                    f"epochs): {c['all_images_cache_gib_vits']:.1f} GiB per rank with ViT-S/14."]
    if "probes_today" in r:
        p = r["probes_today"]
        out += ["", f"Today's 2D feature bank (measured on {p['bank_views']} views, {p['bytes_per_view'] / 1024:.0f} KiB "
                    f"per view): **extrapolated** to the {p['views']:,} train views: {p['bank_gib_tiny']:.1f} GiB with "
                    f"the tiny ViT, {p['bank_gib_vits']:.0f} GiB with ViT-S/14 at 224x448 (x2 while torch.cat builds "
                    f"it). Today's 3D probe (measured on {p['lidar_scans']} scans, {p['bytes_per_point']:.0f} B per "
                    f"point): {p['lidar_gib_pool']:.1f} GiB for N scans of this pool's {p['points_per_scan']:,.0f} "
                    f"points, {p['lidar_gib_nuscenes']:.0f} GiB at nuScenes' ~{NUSCENES_POINTS:,} points per "
                    f"scan with the 96-channel encoder (x2 in torch.cat)."]
    return out


def _verdict_lines(v: dict[str, Any], sizes: list[int]) -> list[str]:
    out = [""]
    for metric, name in zip(METRICS, ("PSS", "USS", "anonymous PSS", "RSS (VmHWM)")):
        f = v[f"flat_{metric}"]
        out.append(f"**Flat in N, {name}** (every process of the store path within {FLAT:.2f}x from N = {sizes[0]:,} "
                   f"to {sizes[-1]:,}): largest ratio {f['ratio']:.3f} ({f['worst']}): "
                   f"**{'met' if f['met'] else 'NOT met'}**.")
    if "rank" in v:
        out.append(f"**Per rank at N = {v['rank']['n']:,}** (at most 3 GB): largest stage-1 rank PSS "
                   f"{v['rank']['max_rank_pss_bytes'] / 1e9:.2f} GB: **{'met' if v['rank']['met'] else 'NOT met'}**.")
    if "probe_process" in v:
        p = v["probe_process"]
        out.append(f"**Per probe process at N = {p['n']:,}** (at most 3 GB): largest PSS {p['max_pss_bytes'] / 1e9:.2f} "
                   f"GB ({p['worst']}): **{'met' if p['met'] else 'NOT met'}**.")
    return out


def markdown(report_: dict[str, Any]) -> str:
    """The tables: per N every process of every phase; today beside the store; PSS across N; verdict."""
    sizes, out = report_["sizes"], []
    out.append(f"CPU {report_['cpu']}, {report_['cpus']} CPUs, OMP_NUM_THREADS={report_['omp_num_threads']}, "
               f"1-minute load average {report_['load_before']:.2f} before, {report_['load_after']:.2f} after; "
               f"stage 1: {PROCESSES} processes x {WORKERS} workers, {report_['steps']} steps of total batch 4, "
               f"six cameras; store builds: {report_['slice']} images computed; probe heads: "
               f"{report_['head_iterations']} iterations each, {WORKERS} workers; the phases that build nothing: "
               f"median of {report_['repeats']} runs per process. MiB throughout.")
    for n in sizes:
        r = report_["results"][str(n)]
        f = r["files"]
        out += ["", f"### N = {n:,} samples ({n * CAMERAS:,} images)", "",
                f"Info JSON {f['json_mib']:.0f} MiB, info store {f['info_store_mib']:.0f} MiB"
                + (f"; teacher-feature store {f['feature_store_apparent_mib']:,.0f} MiB apparent, "
                   f"{f['feature_store_on_disk_mib']:.1f} MiB on disk (a ViT-S/14 store at 224x448: "
                   f"{f['vits_store_gib']:.1f} GiB)" if "vits_store_gib" in f else ""), ""]
        out += _process_rows(r) + _today_lines(r, report_["steps"])
    out += ["", "### Peak PSS / USS / anonymous PSS / RSS across N (the largest process of each kind)", "",
            "| phase | process | " + " | ".join(f"N = {n:,}" for n in sizes) + " | largest / smallest |",
            "|---|---|" + "---:|" * (len(sizes) + 1)]
    for key, row in report_["flatness"].items():
        cells = " | ".join(" / ".join(mib(row[m][k]) for m in METRICS) for k in range(len(sizes)))
        ratio = " / ".join(f"{row[f'{m}_ratio']:.2f}" if f"{m}_ratio" in row else "—" for m in METRICS)
        out.append(f"| {key} | {cells} | {ratio} |")
    return "\n".join(out + _verdict_lines(report_["verdict"], sizes)) + "\n"


def probes_today(phases: dict[str, Any], n: int) -> dict[str, float]:
    """What the removed 2D bank and 3D in-RAM features would hold for N samples, from the slice."""
    bank = phases["2D probe: today (slice)"]["reports"][0]
    lidar = phases["3D probe: today (slice)"]["reports"][0]
    views = n * CAMERAS
    return {"views": views, "bank_views": bank["views"], "bytes_per_view": bank["bytes_per_view"],
            "bank_gib_tiny": views * bank["bytes_per_view"] / 2**30, "bank_gib_vits": views * VITS_VIEW_BYTES / 2**30,
            "lidar_scans": lidar["scans"], "bytes_per_point": lidar["bytes_per_point"],
            "points_per_scan": lidar["points"] / lidar["scans"],
            "lidar_gib_pool": n * lidar["points"] / lidar["scans"] * lidar["bytes_per_point"] / 2**30,
            "lidar_gib_nuscenes": n * NUSCENES_POINTS * (96 * 4 + 8) / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"N = {', '.join(map(str, QUICK_SIZES))} only")
    parser.add_argument("--sizes", type=int, nargs="+", help=f"sample counts (default {SIZES})")
    parser.add_argument("--steps", type=int, default=3, help="stage-1 optimiser steps per run")
    parser.add_argument("--slice", type=int, default=192, help="images the store builds compute (3D: scans x 6)")
    parser.add_argument("--head-iterations", type=int, default=40, help="iterations of each 2D probe head")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each phase that builds nothing (median peaks per process)")
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all",
                        help="stage 1 and the data path (issue 15), the probes (issue 16), or both")
    parser.add_argument("--out", type=Path, help="results JSON (default bench/results/scale[_<part>].json)")
    parser.add_argument("--child", choices=[c for _, c, _ in PHASES.values()], help=argparse.SUPPRESS)
    parser.add_argument("--info-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        children = {"info-store": lambda: child_info(args, False), "info-json": lambda: child_info(args, True),
                    "build": lambda: child_build(args), "stage1-store": lambda: child_stage1(args, False),
                    "stage1-today": lambda: child_stage1(args, True),
                    **{name: lambda child=child: child(args, lambda **values: report(args, **values))
                       for name, child in PROBE_CHILDREN.items()}}
        children[args.child]()
        return
    phases_run = PHASES if args.part == "all" else PARTS[args.part]
    args.out = args.out or REPO / "bench" / "results" / ("scale.json" if args.part == "all" else f"scale_{args.part}.json")
    sizes = sorted(args.sizes or (QUICK_SIZES if args.quick else SIZES))
    load_before, start = os.getloadavg()[0], time.perf_counter()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pool = make_pool(Path(tmp) / "world")
        for n in sizes:
            print(f"N = {n:,} ...", file=sys.stderr, flush=True)
            folder, work = Path(tmp) / f"n{n}", Path(tmp) / f"work{n}"
            work.mkdir()
            files = write_infos(folder, pool, n)
            phases = {phase: measure_phase(phase, args, folder, work) for phase in phases_run}
            results[str(n)] = {"files": files, "phases": phases}
            if "stage 1: today" in phases:
                files.update(store_disk(work), vits_store_gib=n * CAMERAS * VITS_MAP_BYTES / 2**30)
                results[str(n)]["today_cache"] = cache_extrapolation(phases["stage 1: today"], n)
            if "2D probe: today (slice)" in phases:
                results[str(n)]["probes_today"] = probes_today(phases, n)
            write_atomic(args.out.with_suffix(".partial.json"), json.dumps(results, indent=1))  # should a table fail
    flat = flatness(results, sizes)
    out = {"cpu": cpu_model(), "cpus": len(os.sched_getaffinity(0)), "load_before": load_before,
           "load_after": os.getloadavg()[0], "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
           "python": platform.python_version(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "seconds": time.perf_counter() - start, "sizes": sizes, "steps": args.steps, "slice": args.slice,
           "head_iterations": args.head_iterations, "part": args.part,
           "repeats": args.repeats,
           "pool": {"records": len(pool["samples"]), "sweeps_per_record": POOL_SWEEPS, "cameras": CAMERAS},
           "results": results, "flatness": flat, "verdict": verdict(flat, results, sizes)}
    table = markdown(out)
    write_atomic(args.out, json.dumps(out, indent=1) + "\n")
    args.out.with_suffix(".partial.json").unlink()
    print(table)
    print(f"{out['seconds']:.0f} s in all; wrote {args.out}")


if __name__ == "__main__":
    main()
