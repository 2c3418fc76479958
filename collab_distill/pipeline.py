"""The main job on the embedded default, step by step (what ``tools/demo.py`` runs).

synthetic world -> prepare -> clear-weather teacher -> per seed: stage 1 -> stage 2 -> baselines
(teacher_plus, asymmetric, self_distill) -> 2D probes (seg, depth) per condition for the frozen teacher
and every student -> 3D probe of stage 1 and of a random encoder -> report; with several seeds, a
mean +- std table over them.

Layout under ``out/``: ``teacher/`` (shared by every seed, as a downloaded DINOv2 would be),
``seed<S>/<step>/`` per seed, ``seed<S>/report/`` and, for several seeds, ``seeds.md``/``seeds.json``.
Each step is skipped when its outputs exist (the run resumes where it stopped). Every training step
is an ordinary run (``config.yaml``, ``run.json``, checkpoints, ``weights/``) that can be repeated
with ``tools/train_*.py --config <out>/<step>/config.yaml``.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from collab_distill.config import RunConfig, load_config
from collab_distill.probe.data import ViewCache
from data_prep.synthetic.config import SyntheticConfig

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]


@dataclass
class DemoOptions:
    """What the demo runs: output folder, world folder, seeds, size preset and an optional real teacher."""

    out: Path = Path("runs/demo")
    data: Path = Path("data/synthetic_demo")
    seeds: tuple[int, ...] = (0,)
    quick: bool = False
    teacher_weights: str = ""            # a DINOv2/timm checkpoint instead of the demo's own teacher
    teacher_model: str = "vit_tiny_patch14_cpu"


@dataclass(frozen=True)
class Preset:
    """The size of one demo preset: the world's config and the overrides of each step's config."""

    world: str                      # configs/synthetic/<world>.yaml
    teacher: tuple[str, ...]
    stage1: tuple[str, ...]
    stage2: tuple[str, ...]
    baseline: tuple[str, ...]
    probe: tuple[str, ...]
    lidar_probe: tuple[str, ...]


# The two presets (budgets on 2 CPU cores, measured in README.md: default <= 20 min, quick <= 4 min).
PRESETS = {
    False: Preset(world="demo",
                  teacher=("train.epochs=12",), stage1=("train.epochs=8", "data.cameras=[all]"),
                  stage2=("train.epochs=6",), baseline=("train.epochs=6",), probe=("train.iterations=300",),
                  lidar_probe=("epochs=20",)),
    True: Preset(world="demo_quick",
                 teacher=("train.epochs=4",),
                 stage1=("train.epochs=2", "train.batch_size=2"), stage2=("train.epochs=1",),
                 baseline=("train.epochs=1",), probe=("train.iterations=60", "data.cameras=[CAM_FRONT]"),
                 lidar_probe=("epochs=10", "data.cameras=[CAM_FRONT]")),
}
BASELINES = ("teacher_plus", "asymmetric", "self_distill")
PROBED = ("teacher", *BASELINES, "stage2")  # the frozen teacher and every trained student


@dataclass
class Step:
    """One step: its name, the file whose existence marks it done, and what runs it."""

    name: str
    done_marker: Path
    run: Callable[[], None]
    seconds: float = field(default=0.0)


def seed_dir(opts: DemoOptions, seed: int) -> Path:
    """The outputs of one seed."""
    return opts.out / f"seed{seed}"


def teacher_weights(opts: DemoOptions) -> str:
    """The teacher checkpoint every later step loads."""
    return opts.teacher_weights or str(opts.out / "teacher" / "weights" / "teacher_vit.safetensors")


def _train(config: str, opts: DemoOptions, out: Path, seed: int, extra: Sequence[str]) -> None:
    from collab_distill.engine.run import run_training

    cfg: RunConfig = load_config(REPO / config, [
        f"experiment.output_dir={out}", f"experiment.name={out.name}", f"experiment.seed={seed}",
        f"data.info_dir={opts.data / 'infos'}", f"model.image.name={opts.teacher_model}", *extra])
    run_training(cfg, resume="auto")


def steps(opts: DemoOptions) -> list[Step]:
    """The demo's steps in order."""
    size = PRESETS[opts.quick]
    world = load_config(REPO / "configs" / "synthetic" / f"{size.world}.yaml", schema=SyntheticConfig)

    def synthetic() -> None:
        from data_prep.synthetic.generate import generate

        log.info(generate(world, opts.data, workers=2))

    def prepare() -> None:
        from data_prep.nuscenes_infos import prepare as run_prepare

        log.info(run_prepare(opts.data, world.version, opts.data / "infos", workers=2).to_text())

    result = [
        Step("synthetic world", opts.data / world.version / "scene.json", synthetic),
        Step("prepare", opts.data / "infos" / "summary.json", prepare),
    ]
    if not opts.teacher_weights:
        result.append(Step("teacher (clear only)", Path(teacher_weights(opts)),
                           lambda: _train("configs/teacher/synthetic.yaml", opts, opts.out / "teacher",
                                          opts.seeds[0], size.teacher)))
    views = ViewCache()  # the probes of every encoder and seed read the same views: load them once
    for seed in opts.seeds:
        result += seed_steps(opts, size, seed, views)
    if len(opts.seeds) > 1:
        result.append(Step(f"mean and std over seeds {list(opts.seeds)}", opts.out / "seeds.md",
                           lambda: _seeds_table(opts)))
    return result


def seed_steps(opts: DemoOptions, size: Preset, seed: int, views: ViewCache) -> list[Step]:
    """Training, probes and report of one seed."""
    out = seed_dir(opts, seed)
    teacher = [f"model.image.weights={teacher_weights(opts)}"]
    tag = f"seed {seed}: " if len(opts.seeds) > 1 else ""
    result = [
        Step(f"{tag}stage 1", out / "stage1" / "weights" / "point_encoder.safetensors",
             lambda: _train("configs/stage1/synthetic.yaml", opts, out / "stage1", seed, [*teacher, *size.stage1])),
        Step(f"{tag}stage 2", out / "stage2" / "weights" / "student.safetensors",
             lambda: _train("configs/stage2/synthetic.yaml", opts, out / "stage2", seed,
                            [*teacher, f"method.point_weights={out / 'stage1' / 'weights'}", *size.stage2])),
    ]
    for name in BASELINES:
        result.append(Step(f"{tag}{name}", out / name / "weights" / "student.safetensors",
                           lambda name=name: _train(f"configs/baselines/{name}.yaml", opts, out / name, seed,
                                                    [*teacher, *size.baseline])))
    for name in PROBED:
        for task, config in (("seg", "seg_linear"), ("depth", "depth_linear")):
            result.append(Step(f"{tag}{task} probe: {name}", out / "probes" / name / f"{task}.json",
                               lambda name=name, config=config: _probe(config, opts, seed, name, size.probe, views)))
    for name, weights in (("stage1", str(out / "stage1" / "weights")), ("random init", "")):
        path = out / "probes" / name.replace(" ", "_") / "lidar_seg.json"
        result.append(Step(f"{tag}3D probe: {name}", path,
                           lambda name=name, weights=weights, path=path: _lidar_probe(
                               opts, seed, name, weights, size.lidar_probe, path)))
    result.append(Step(f"{tag}report", out / "report" / "report.md", lambda: _report(out)))
    return result


def _probe(config: str, opts: DemoOptions, seed: int, name: str, extra: Sequence[str], views: ViewCache) -> None:
    from collab_distill.probe.config import ProbeConfig
    from collab_distill.probe.run import run_probe

    out = seed_dir(opts, seed)
    encoder = "" if name == "teacher" else str(out / name / "weights" / "student.safetensors")
    cfg = load_config(REPO / "configs" / "probe" / f"{config}.yaml", [
        f"experiment.name={name}", f"experiment.output_dir={out / 'probes'}", f"experiment.seed={seed}",
        f"encoder={encoder}", f"data.info_dir={opts.data / 'infos'}", f"model.image.name={opts.teacher_model}",
        f"model.image.weights={teacher_weights(opts)}", *extra], schema=ProbeConfig)
    run_probe(cfg, progress=True, cache=views)


def _lidar_probe(opts: DemoOptions, seed: int, name: str, weights: str, extra: Sequence[str], path: Path) -> None:
    from collab_distill.probe.lidar import LidarProbeConfig, run_lidar_probe
    from collab_distill.probe.results import write_result

    cfg = load_config(REPO / "configs" / "probe_lidar" / "synthetic.yaml", [
        f"point_weights={weights}", f"seed={seed}", f"data.info_dir={opts.data / 'infos'}",
        f"model.image.name={opts.teacher_model}", f"model.image.weights={teacher_weights(opts)}", *extra],
        schema=LidarProbeConfig)
    write_result(run_lidar_probe(cfg, name), path)


def _report(out: Path) -> None:
    from collab_distill.report import build_report

    build_report([out / "probes"], out / "report", order=list(PROBED))


def _seeds_table(opts: DemoOptions) -> None:
    from collab_distill.report.seeds import write_seed_summary

    write_seed_summary([seed_dir(opts, s) / "report" / "report.json" for s in opts.seeds], opts.out / "seeds")


def run_demo(opts: DemoOptions) -> list[Step]:
    """Run every step whose outputs do not exist yet; log progress and timings (also appended to
    ``out/timings.jsonl`` with the CPU time and load average, for the budgets in the README)."""
    todo = steps(opts)
    opts.out.mkdir(parents=True, exist_ok=True)
    for i, step in enumerate(todo, 1):
        if step.done_marker.exists():
            log.info("[%d/%d] %s: done already (%s), skipped", i, len(todo), step.name, step.done_marker)
            continue
        log.info("[%d/%d] %s ...", i, len(todo), step.name)
        t0, cpu0 = time.perf_counter(), time.process_time()
        step.run()
        step.seconds = time.perf_counter() - t0
        record = {"step": step.name, "seconds": round(step.seconds, 2),
                  "cpu_seconds": round(time.process_time() - cpu0, 2), "load_avg_1min": os.getloadavg()[0],
                  "quick": opts.quick, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with open(opts.out / "timings.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        log.info("[%d/%d] %s: %.0f s", i, len(todo), step.name, step.seconds)
    return todo
