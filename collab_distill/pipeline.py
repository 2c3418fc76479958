"""The main job on the embedded default, step by step (what ``tools/demo.py`` runs).

synthetic world -> prepare -> clear-weather teacher -> its teacher-feature store (stage 1's teacher
maps, built once; ``tools/cache_teacher.py``) -> per seed: stage 1 (from the store) -> stage 2 -> baselines
(the registry's ``baseline`` methods) -> 2D probes (seg, depth) per condition and under the preset's
unseen corruptions (``probe: eval: corruptions``) for the frozen teacher and every student -> 3D probe of stage 1 and of a random encoder -> report; with several seeds, a
mean +- std table over them.

The size is a preset, ``configs/demo/default.yaml`` or ``configs/demo/quick.yaml`` (schema ``demo``,
:class:`DemoPreset`): the world's synthetic config and, per step, a fragment of that step's shipped
config. The world is made by the :class:`~collab_distill.data.world.WorldBuilder` the caller passes
in (``tools/demo.py``: ``data_prep.world.SyntheticWorldBuilder``), so the library never imports
``data_prep``.

Layout under ``out/``: ``teacher/`` (shared by every seed, as a downloaded DINOv2 would be),
``teacher_store/`` (shared too; its ``meta.json`` marks it complete), ``seed<S>/<step>/`` per seed, ``seed<S>/report/`` and, for several seeds, ``seeds.md``/``seeds.json``.
Each step is skipped when its outputs exist (the run resumes where it stopped). Every training step
is an ordinary run (``config.yaml``, ``run.json``, checkpoints, ``weights/``) that can be repeated
with ``tools/train.py --config <out>/<step>/config.yaml``.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from collab_distill.config import ConfigError, RunConfig, load_config, register_schema
from collab_distill.data.world import WorldBuilder
from collab_distill.methods.registry import METHODS, method_names
from collab_distill.probe.config import ProbeConfig
from collab_distill.probe.lidar import RANDOM_INIT_NAME, LidarProbeConfig, lidar_result_path

log = logging.getLogger(__name__)

BASELINES = method_names("baseline")
PROBED = ("teacher", *BASELINES, "stage2")  # the frozen teacher and every trained student
PROBES = {"seg": "configs/probe/seg_linear.yaml", "depth": "configs/probe/depth_linear.yaml"}  # the 2D probes
LIDAR_PROBE = "configs/probe_lidar/synthetic.yaml"
DEFAULT_PRESET, QUICK_PRESET = "configs/demo/default.yaml", "configs/demo/quick.yaml"  # the two shipped sizes


@dataclass
class DemoPreset:
    """A demo size (``configs/demo/*.yaml``, schema ``demo``; budgets measured in README.md).

    ``world`` is the synthetic config of the world; every other key is a fragment of one step's
    shipped config, nested as in that config (``stage1: {train: {epochs: 8}}``), set on top of it.
    """

    world: str = "configs/synthetic/demo.yaml"
    teacher: dict[str, Any] = field(default_factory=dict)       # the teacher_pretrain run
    stage1: dict[str, Any] = field(default_factory=dict)
    stage2: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)      # every baseline method
    probe: dict[str, Any] = field(default_factory=dict)         # the seg and depth probes
    lidar_probe: dict[str, Any] = field(default_factory=dict)   # the 3D probe


register_schema("demo", DemoPreset)


def _step_configs(step: str) -> list[tuple[str, type]]:
    """The shipped configs (and schemas) a preset fragment applies to: a training group's methods,
    the 2D probes or the 3D probe."""
    if step == "probe":
        return [(path, ProbeConfig) for path in PROBES.values()]
    if step == "lidar_probe":
        return [(LIDAR_PROBE, LidarProbeConfig)]
    return [(METHODS[name].default_config, RunConfig) for name in method_names(step)]


def overrides(fragment: Mapping[str, Any], prefix: str = "") -> list[str]:
    """A nested config fragment as dotted overrides: ``{"train": {"epochs": 8}}`` -> ``["train.epochs=8"]``
    (values written as JSON, which the override parser reads back as they were)."""
    return [item for key, value in fragment.items()
            for item in (overrides(value, f"{prefix}{key}.") if isinstance(value, Mapping) and value
                         else [f"{prefix}{key}={json.dumps(value)}"])]


def load_preset(path: str, preset_overrides: Sequence[str] = ()) -> DemoPreset:
    """The preset at ``path`` (with ``key=value`` overrides, e.g. ``stage1.train.epochs=3``), each step
    fragment checked against the configs it applies to.

    Raises:
        ConfigError: a bad preset, or a fragment with an unknown key or a bad value (before any step runs).
    """
    preset = load_config(path, preset_overrides, schema=DemoPreset)
    for step in (f.name for f in fields(DemoPreset) if f.name != "world"):
        for config, schema in _step_configs(step):
            try:
                load_config(config, overrides(getattr(preset, step)), schema=schema)
            except ConfigError as exc:   # the fragment arrived as overrides: say where it is written instead
                raise ConfigError(f"{path}: {step} (applied to {config}): "
                                  f"{str(exc).removeprefix('command line: ')}") from None
    return preset


@dataclass
class DemoOptions:
    """What the demo runs: output folder, world folder, seeds, size preset and an optional real teacher."""

    out: Path = Path("runs/demo")
    data: Path = Path("data/synthetic_demo")
    seeds: tuple[int, ...] = (0,)
    preset: str = DEFAULT_PRESET         # the size: a demo config (schema demo), e.g. QUICK_PRESET
    preset_overrides: tuple[str, ...] = ()  # key=value on top of the preset
    teacher_weights: str = ""            # a DINOv2/timm checkpoint instead of the demo's own teacher
    teacher_model: str = "vit_tiny_patch14_cpu"


@dataclass
class Step:
    """One step: its name, the file whose existence marks it done, and what runs it."""

    name: str
    done_marker: Path
    run: Callable[[], None]
    seconds: float = field(default=0.0)


@dataclass(frozen=True)
class _Demo:
    """What every step of one demo reads: the options, the preset and the world's info files."""

    opts: DemoOptions
    preset: DemoPreset
    info_dir: Path

    def shared(self, seed: int) -> list[str]:
        """The overrides every step's config gets: seed, info files and the teacher's architecture."""
        return [f"experiment.seed={seed}", f"data.info_dir={self.info_dir}",
                f"model.image.name={self.opts.teacher_model}"]


def seed_dir(opts: DemoOptions, seed: int) -> Path:
    """The outputs of one seed."""
    return opts.out / f"seed{seed}"


def teacher_weights(opts: DemoOptions) -> str:
    """The teacher checkpoint every later step loads."""
    return opts.teacher_weights or str(opts.out / "teacher" / "weights" / "teacher_vit.safetensors")


def teacher_store(opts: DemoOptions) -> Path:
    """The teacher-feature store every seed's stage 1 reads (built once: the teacher is shared)."""
    return opts.out / "teacher_store"


def _cache_teacher(demo: _Demo) -> None:
    """Build (or resume) the teacher-feature store of stage 1's config, as every seed's stage 1 runs it."""
    from collab_distill.engine.teacher_store import build_teacher_store

    cfg = load_config(METHODS["stage1"].default_config, [
        *demo.shared(demo.opts.seeds[0]), f"model.image.weights={teacher_weights(demo.opts)}",
        *overrides(demo.preset.stage1)], schema=RunConfig)
    build_teacher_store(cfg, teacher_store(demo.opts))


def _train(demo: _Demo, method: str, out: Path, seed: int, extra: list[str], fragment: Mapping[str, Any]) -> None:
    """One training run of ``method`` (its shipped config) into ``out``."""
    from collab_distill.engine.run import run_training

    cfg = load_config(METHODS[method].default_config, [
        f"experiment.output_dir={out}", f"experiment.name={out.name}", *demo.shared(seed), *extra,
        *overrides(fragment)], schema=RunConfig)
    run_training(cfg, resume="auto")


def steps(opts: DemoOptions, world: WorldBuilder) -> list[Step]:
    """The demo's steps in order; ``world`` makes the synthetic world and its info files.

    Raises:
        ConfigError: a bad preset or world config (before any step runs).
    """
    preset = load_preset(opts.preset, opts.preset_overrides)
    files = world.files(preset.world, opts.data)
    demo = _Demo(opts, preset, files.info_dir)
    result = [
        Step("synthetic world", files.generated,
             lambda: log.info(world.generate(preset.world, opts.data, workers=2, progress=True))),
        Step("prepare", files.prepared, lambda: log.info(world.prepare(preset.world, opts.data, workers=2,
                                                                         progress=True))),
    ]
    if not opts.teacher_weights:
        result.append(Step("teacher (clear only)", Path(teacher_weights(opts)),
                           lambda: _train(demo, "teacher_pretrain", opts.out / "teacher", opts.seeds[0], [],
                                          preset.teacher)))
    result.append(Step("teacher features", teacher_store(opts) / "meta.json", lambda: _cache_teacher(demo)))
    for seed in opts.seeds:
        result += seed_steps(demo, seed)
    if len(opts.seeds) > 1:
        result.append(Step(f"mean and std over seeds {list(opts.seeds)}", opts.out / "seeds.md",
                           lambda: _seeds_table(opts)))
    return result


def seed_steps(demo: _Demo, seed: int) -> list[Step]:
    """Training, probes and report of one seed."""
    opts, preset = demo.opts, demo.preset
    out = seed_dir(opts, seed)
    teacher = [f"model.image.weights={teacher_weights(opts)}"]
    tag = f"seed {seed}: " if len(opts.seeds) > 1 else ""
    result = [
        Step(f"{tag}stage 1", out / "stage1" / "weights" / "point_encoder.safetensors",
             lambda: _train(demo, "stage1", out / "stage1", seed,
                            [*teacher, f"method.teacher_store={teacher_store(opts)}"], preset.stage1)),
        Step(f"{tag}stage 2", out / "stage2" / "weights" / "student.safetensors",
             lambda: _train(demo, "stage2", out / "stage2", seed,
                            [*teacher, f"method.point_weights={out / 'stage1' / 'weights'}"], preset.stage2)),
    ]
    for name in BASELINES:
        result.append(Step(f"{tag}{name}", out / name / "weights" / "student.safetensors",
                           lambda name=name: _train(demo, name, out / name, seed, teacher, preset.baseline)))
    for name in PROBED:
        for task, config in PROBES.items():
            result.append(Step(f"{tag}{task} probe: {name}", out / "probes" / name / f"{task}.json",
                               lambda name=name, config=config: _probe(demo, config, seed, name)))
    for name, weights in (("stage1", str(out / "stage1" / "weights")), (RANDOM_INIT_NAME, "")):
        cfg = _lidar_probe_config(demo, seed, name, weights)
        result.append(Step(f"{tag}3D probe: {name}", lidar_result_path(cfg), lambda cfg=cfg: _lidar_probe(cfg)))
    result.append(Step(f"{tag}report", out / "report" / "report.md", lambda: _report(out)))
    return result


def _probe(demo: _Demo, config: str, seed: int, name: str) -> None:
    """The 2D probe ``config`` of encoder ``name`` (the frozen teacher or a trained student). Its features
    come from the probe store of the encoder under ``<out>/probe_stores``: built by the first probe of
    that encoder (seg), read by the next (depth), and the teacher's by every seed; so do the stores of
    the evaluation views under each unseen corruption (seeded by the seed: one per encoder and seed)."""
    from collab_distill.probe.run import run_probe

    out = seed_dir(demo.opts, seed)
    encoder = "" if name == "teacher" else str(out / name / "weights" / "student.safetensors")
    cfg = load_config(config, [
        f"experiment.name={name}", f"experiment.output_dir={out / 'probes'}", *demo.shared(seed), f"encoder={encoder}",
        f"model.image.weights={teacher_weights(demo.opts)}", f"store.dir={demo.opts.out / 'probe_stores'}",
        *overrides(demo.preset.probe)], schema=ProbeConfig)
    run_probe(cfg, progress=True)


def _lidar_probe_config(demo: _Demo, seed: int, label: str, weights: str) -> LidarProbeConfig:
    """The 3D probe of the point encoder ``weights`` ("" = random init); its result goes to
    ``seed<S>/probes/<label>/lidar_seg.json`` (:func:`~collab_distill.probe.lidar.lidar_result_path`)."""
    return load_config(LIDAR_PROBE, [
        f"experiment.name={label}", f"experiment.output_dir={seed_dir(demo.opts, seed) / 'probes'}",
        *demo.shared(seed), f"point_weights={weights}", f"model.image.weights={teacher_weights(demo.opts)}",
        *overrides(demo.preset.lidar_probe)], schema=LidarProbeConfig)


def _lidar_probe(cfg: LidarProbeConfig) -> None:
    """Run the 3D probe ``cfg`` and write its result (the report's row ``experiment.name``). A training-point
    store of another encoder in its folder (a stage 1 trained again) is refused, not replaced: delete the
    probe's folder under the seed's ``probes/`` to run it again."""
    from collab_distill.probe.lidar import run_lidar_probe
    from collab_distill.probe.results import write_result

    write_result(run_lidar_probe(cfg), lidar_result_path(cfg))


def _report(out: Path) -> None:
    from collab_distill.report import build_report

    build_report([out / "probes"], out / "report", order=list(PROBED))


def _seeds_table(opts: DemoOptions) -> None:
    from collab_distill.report.seeds import write_seed_summary

    write_seed_summary([seed_dir(opts, s) / "report" / "report.json" for s in opts.seeds], opts.out / "seeds")


def run_demo(opts: DemoOptions, world: WorldBuilder) -> list[Step]:
    """Run every step whose outputs do not exist yet (``world`` makes the synthetic world); log progress
    and timings (also appended to ``out/timings.jsonl`` with the CPU time and load average, for the
    budgets in the README)."""
    todo = steps(opts, world)
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
                  "preset": opts.preset, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with open(opts.out / "timings.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        log.info("[%d/%d] %s: %.0f s", i, len(todo), step.name, step.seconds)
    return todo
