"""The main job on the embedded default, step by step (what ``tools/demo.py`` runs).

synthetic world -> prepare -> clear-weather teacher -> stage 1 -> stage 2 -> baselines
(teacher_plus, asymmetric, self_distill) -> 2D probes (seg, depth) per condition for the teacher and
every student -> 3D probe of stage 1 and of a random encoder -> report.

Each step writes into ``out/<step>/`` and is skipped when its outputs exist (the run resumes where it
stopped). Every training step is an ordinary run (``config.yaml``, ``run.json``, checkpoints,
``weights/``) that can be repeated with ``tools/train_*.py --config <out>/<step>/config.yaml``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from collab_distill.config import RunConfig, load_config

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]


@dataclass
class DemoOptions:
    """What the demo runs: output folder, data folder, seed, size preset and an optional real teacher."""

    out: Path = Path("runs/demo")
    data: Path = Path("data/synthetic")
    seed: int = 0
    quick: bool = False
    teacher_weights: str = ""            # a DINOv2/timm checkpoint instead of the demo's own teacher
    teacher_model: str = "vit_tiny_patch14_cpu"


# Per-step run settings of the two presets (total budgets on 2 CPU cores: README).
SIZES = {
    False: {"synthetic": [],
            "teacher": ["train.epochs=12"], "stage1": ["train.epochs=6"], "stage2": ["train.epochs=2"],
            "baseline": ["train.epochs=2"], "probe": ["train.iterations=300"], "lidar_probe": ["epochs=30"]},
    True: {"synthetic": ["scenes=4", "samples_per_scene=4", "image_size=[224,126]"],
           "teacher": ["train.epochs=6"], "stage1": ["train.epochs=2"], "stage2": ["train.epochs=1"],
           "baseline": ["train.epochs=1"], "probe": ["train.iterations=60", "data.cameras=[CAM_FRONT]"],
           "lidar_probe": ["epochs=10", "data.cameras=[CAM_FRONT]"]},
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


def _train(config: str, opts: DemoOptions, name: str, extra: list[str]) -> None:
    from collab_distill.engine.run import run_training

    cfg: RunConfig = load_config(REPO / config, [
        f"experiment.output_dir={opts.out / name}", f"experiment.name={name}", f"experiment.seed={opts.seed}",
        f"data.info_dir={opts.data / 'infos'}", f"model.image.name={opts.teacher_model}", *extra])
    run_training(cfg, resume="auto")


def teacher_weights(opts: DemoOptions) -> str:
    """The teacher checkpoint every later step loads."""
    return opts.teacher_weights or str(opts.out / "teacher" / "weights" / "teacher_vit.safetensors")


def steps(opts: DemoOptions) -> list[Step]:
    """The demo's steps in order."""
    size = SIZES[opts.quick]
    teacher = [f"model.image.weights={teacher_weights(opts)}"]
    out = opts.out

    def synthetic() -> None:
        from data_prep.synthetic.config import SyntheticConfig
        from data_prep.synthetic.generate import generate

        cfg = load_config(REPO / "configs" / "synthetic" / "mini.yaml", size["synthetic"], schema=SyntheticConfig)
        log.info(generate(cfg, opts.data, workers=2))

    def prepare() -> None:
        from data_prep.nuscenes_infos import prepare as run_prepare

        log.info(run_prepare(opts.data, "v1.0-mini", opts.data / "infos", workers=2).to_text())

    result = [
        Step("synthetic world", opts.data / "v1.0-mini" / "scene.json", synthetic),
        Step("prepare", opts.data / "infos" / "summary.json", prepare),
    ]
    if not opts.teacher_weights:
        result.append(Step("teacher (clear only)", out / "teacher" / "weights" / "teacher_vit.safetensors",
                           lambda: _train("configs/teacher/synthetic.yaml", opts, "teacher", size["teacher"])))
    result += [
        Step("stage 1", out / "stage1" / "weights" / "point_encoder.safetensors",
             lambda: _train("configs/stage1/synthetic.yaml", opts, "stage1", [*teacher, *size["stage1"]])),
        Step("stage 2", out / "stage2" / "weights" / "student.safetensors",
             lambda: _train("configs/stage2/synthetic.yaml", opts, "stage2",
                            [*teacher, f"method.point_weights={out / 'stage1' / 'weights'}", *size["stage2"]])),
    ]
    for name in BASELINES:
        result.append(Step(name, out / name / "weights" / "student.safetensors",
                           lambda name=name: _train(f"configs/baselines/{name}.yaml", opts, name,
                                                    [*teacher, *size["baseline"]])))
    for name in PROBED:
        for task, config in (("seg", "seg_linear"), ("depth", "depth_linear")):
            result.append(Step(f"{task} probe: {name}", out / "probes" / name / f"{task}.json",
                               lambda name=name, config=config: _probe(config, opts, name, size["probe"])))
    for name, weights in (("stage1", str(out / "stage1" / "weights")), ("random init", "")):
        result.append(Step(f"3D probe: {name}", out / "probes" / name.replace(" ", "_") / "lidar_seg.json",
                           lambda name=name, weights=weights: _lidar_probe(opts, name, weights, size["lidar_probe"])))
    result.append(Step("report", out / "report" / "report.md", lambda: _report(opts)))
    return result


def _probe(config: str, opts: DemoOptions, name: str, extra: list[str]) -> None:
    from collab_distill.probe.config import ProbeConfig
    from collab_distill.probe.run import run_probe

    encoder = "" if name == "teacher" else str(opts.out / name / "weights" / "student.safetensors")
    cfg = load_config(REPO / "configs" / "probe" / f"{config}.yaml", [
        f"experiment.name={name}", f"experiment.output_dir={opts.out / 'probes'}", f"experiment.seed={opts.seed}",
        f"encoder={encoder}", f"data.info_dir={opts.data / 'infos'}", f"model.image.name={opts.teacher_model}",
        f"model.image.weights={teacher_weights(opts)}", *extra], schema=ProbeConfig)
    run_probe(cfg, progress=True)


def _lidar_probe(opts: DemoOptions, name: str, weights: str, extra: list[str]) -> None:
    from collab_distill.probe.lidar import LidarProbeConfig, run_lidar_probe
    from collab_distill.probe.results import write_result

    cfg = load_config(REPO / "configs" / "probe_lidar" / "synthetic.yaml", [
        f"point_weights={weights}", f"seed={opts.seed}", f"data.info_dir={opts.data / 'infos'}",
        f"model.image.name={opts.teacher_model}", f"model.image.weights={teacher_weights(opts)}", *extra],
        schema=LidarProbeConfig)
    write_result(run_lidar_probe(cfg, name), opts.out / "probes" / name.replace(" ", "_") / "lidar_seg.json")


def _report(opts: DemoOptions) -> None:
    from collab_distill.report import build_report

    build_report([opts.out / "probes"], opts.out / "report", order=list(PROBED))


def run_demo(opts: DemoOptions) -> list[Step]:
    """Run every step whose outputs do not exist yet; log progress and timings."""
    todo = steps(opts)
    for i, step in enumerate(todo, 1):
        if step.done_marker.exists():
            log.info("[%d/%d] %s: done already (%s), skipped", i, len(todo), step.name, step.done_marker)
            continue
        log.info("[%d/%d] %s ...", i, len(todo), step.name)
        t0 = time.perf_counter()
        step.run()
        step.seconds = time.perf_counter() - t0
        log.info("[%d/%d] %s: %.0f s", i, len(todo), step.name, step.seconds)
    return todo
