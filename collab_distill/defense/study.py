"""The whole ASVP study (``tools/asvp_study.py``): data, the restoration part, the encoder part, tables.

The data is a small synthetic nuScenes-format set with paired clear renders (``world``: its synthetic
config, ``configs/synthetic/asvp.yaml``), generated into ``<output_dir>/data`` on first use (or read
from ``data_root``) and prepared into info files by the
:class:`~collab_distill.data.world.WorldBuilder` the caller passes in (``tools/asvp_study.py``:
``data_prep.world.SyntheticWorldBuilder``; the library never imports ``data_prep``).
Outputs: ``asvp_study.json`` and ``asvp_study.md`` in ``experiment.output_dir``, both rewritten
(atomically) as soon as each part finishes, so a later failure never loses a finished part.

A study folder is one study with one config. Running again into it:

* resumes: the parts already in ``asvp_study.json`` are kept and only the missing ones run,
  provided the kept parts were run with the same seed, data (``data_root`` and the world's
  resolved settings) and part settings;
* refuses (:class:`StudyError`) a finished study or one whose kept parts were run with other
  settings, unless ``overwrite`` (every configured part runs again; the generated data is kept).
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from collab_distill.config import (
    ConfigError,
    ExperimentConfig,
    config_to_dict,
    git_revision,
    load_config,
    register_schema,
)
from collab_distill.data.world import WorldBuilder
from collab_distill.defense.encoder_study import EncoderStudyConfig, encoder_markdown, run_encoder_study
from collab_distill.defense.restoration.study import RestorationStudyConfig, restoration_markdown, run_restoration_study
from collab_distill.errors import UserError
from collab_distill.ranges import PositiveInt

log = logging.getLogger(__name__)
Part = Literal["restoration", "encoder"]
PARTS: tuple[Part, ...] = ("restoration", "encoder")     # the order they run and appear in
STUDY_JSON, STUDY_MD = "asvp_study.json", "asvp_study.md"


class StudyError(UserError, ValueError):
    """A study folder that cannot be written without losing or mixing results."""


@dataclass
class ASVPStudyConfig:
    """Top-level schema of ``tools/asvp_study.py`` (``configs/asvp/study.yaml``)."""

    experiment: ExperimentConfig = field(default_factory=lambda: ExperimentConfig(name="asvp_study",
                                                                                  output_dir="runs/asvp_study"))
    parts: list[Part] = field(default_factory=lambda: list(PARTS))
    threads: PositiveInt = 1             # torch threads; 1 is fastest on a CPU shared with other jobs
    data_root: str = ""                  # existing set with paired clear renders; "" = <output_dir>/data
    world: str = "configs/synthetic/asvp.yaml"   # synthetic config of the set generated when data_root is ""
    workers: PositiveInt = 2             # generation processes
    restoration: RestorationStudyConfig = field(default_factory=RestorationStudyConfig)
    encoder: EncoderStudyConfig = field(default_factory=EncoderStudyConfig)

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError(f"parts: empty; choose from {list(PARTS)}")


register_schema("asvp_study", ASVPStudyConfig)


def load_study_config(path: str | Path | None, overrides: list[str]) -> ASVPStudyConfig:
    """The study config of ``path`` and ``overrides``; every bad value is a :class:`ConfigError`
    (the value checks of the study's dataclasses raise ``ValueError``, named after the key)."""
    try:
        return load_config(Path(path) if path else None, overrides, ASVPStudyConfig)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"{path or 'defaults'}: {exc}") from None


def prepare_data(cfg: ASVPStudyConfig, world: WorldBuilder) -> tuple[Path, float]:
    """The info-file folder of the study's data (generated and prepared by ``world`` when missing) and
    the seconds it took.

    Raises:
        StudyError: the generated set in ``<output_dir>/data`` was made with other settings than ``world``'s.
    """
    start = time.perf_counter()
    root = Path(cfg.data_root or Path(cfg.experiment.output_dir) / "data")
    recorded = None if cfg.data_root else world.recorded_settings(root)   # ours: it must be the set `world` makes
    if recorded is not None and (changed := _changed(recorded, world.settings(cfg.world))):
        raise StudyError(f"{root}: generated with other data settings ({', '.join(changed[:4])}); "
                         f"delete that folder to generate the configured set, or set data_root")
    files = world.files(cfg.world, root)
    if not files.generated.exists():
        log.info("generating the study's synthetic set into %s", root)
        log.info(world.generate(cfg.world, root, workers=cfg.workers, progress=False))
    if not files.prepared.exists():
        log.info(world.prepare(cfg.world, root, workers=1, progress=False))
    return files.info_dir, time.perf_counter() - start


def run_study(cfg: ASVPStudyConfig, command: list[str], world: WorldBuilder, overwrite: bool = False
              ) -> dict[str, Any]:
    """Run the configured parts that ``experiment.output_dir`` does not hold yet; rewrite
    ``asvp_study.{json,md}`` after each; return the record.

    Args:
        cfg: the study config.
        command: the command line, recorded.
        world: makes the synthetic set of ``cfg.world`` when it is missing.
        overwrite: run every configured part again, discarding what the folder holds.

    Raises:
        ConfigError: a bad ``world`` config (before any work).
        StudyError: the folder holds a finished study, parts run with other settings, or an
            unreadable record (and ``overwrite`` is off); checked before any work.
    """
    start = time.perf_counter()
    out = Path(cfg.experiment.output_dir)
    inputs = json.loads(json.dumps({"config": config_to_dict(cfg), "world": world.settings(cfg.world)}))  # as read back
    previous = {} if overwrite else _resumable(out / STUDY_JSON, cfg, inputs)
    torch.set_num_threads(cfg.threads)
    info_dir, data_seconds = prepare_data(cfg, world)
    result: dict[str, Any] = {"command": command, "git_sha": git_revision(), "torch": torch.__version__,
                              "threads": cfg.threads, "cpu": platform.processor() or platform.machine(),
                              "time_utc": _now(), **inputs,
                              "data": {"info_dir": str(info_dir)},
                              "seconds": {"data": data_seconds}, "earlier": {},
                              "load_avg": {"start": os.getloadavg()}}     # 1/5/15 min; the CPU is often shared
    for part in PARTS:
        if part in previous:
            result[part] = previous[part]
            result["seconds"][part] = previous["seconds"][part]
            result["earlier"][part] = previous["earlier"].get(part) or {"git_sha": previous["git_sha"],
                                                                         "time_utc": previous["time_utc"]}
    result["pending"] = [p for p in PARTS if p in cfg.parts and p not in result]
    if result["earlier"]:
        log.info("resuming %s: keeping %s, running %s", out / STUDY_JSON, ", ".join(result["earlier"]),
                 ", ".join(result["pending"]))
    for part in list(result["pending"]):
        part_start = time.perf_counter()
        try:
            result[part] = _run_part(part, cfg, str(info_dir))
        except BaseException:                          # Ctrl-C too: say what was kept
            if done := [p for p in PARTS if p in result]:
                log.error("the %s part failed; the finished parts (%s) are in %s: run the same command again "
                          "to run only the missing ones", part, ", ".join(done), out / STUDY_JSON)
            raise
        result["seconds"][part] = time.perf_counter() - part_start
        result["load_avg"][part] = os.getloadavg()
        result["pending"].remove(part)
        result["seconds"]["total"] = time.perf_counter() - start
        _write(out, result)
    return result


def _run_part(part: Part, cfg: ASVPStudyConfig, info_dir: str) -> dict[str, Any]:
    """The JSON record of one part."""
    if part == "restoration":
        return run_restoration_study(cfg.restoration, info_dir, cfg.experiment.seed)
    return run_encoder_study(cfg.encoder, info_dir, cfg.experiment.seed)


def _inputs(record: dict[str, Any], part: Part) -> dict[str, Any]:
    """What a part's numbers in ``record`` depend on: the seed, the data (``data_root`` and the world's
    resolved settings) and the part's own settings."""
    config = record["config"]
    return {"experiment": {"seed": config["experiment"]["seed"]}, "data_root": config["data_root"],
            "world": record["world"], part: config[part]}


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are values)."""
    flat: dict[str, Any] = {}
    for name, value in tree.items():
        flat.update(_flat(value, f"{prefix}{name}.") if isinstance(value, dict) else {f"{prefix}{name}": value})
    return flat


def _changed(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The dotted keys whose values differ between two nested dicts, as ``key: old -> new``."""
    old_flat, new_flat = _flat(old), _flat(new)
    return [f"{k}: {old_flat.get(k)!r} -> {new_flat.get(k)!r}" for k in sorted(old_flat.keys() | new_flat.keys())
            if old_flat.get(k) != new_flat.get(k)]


def _resumable(path: Path, cfg: ASVPStudyConfig, inputs: dict[str, Any]) -> dict[str, Any]:
    """The record at ``path`` whose parts this run keeps (``{}`` when there is none); ``inputs``: this
    run's ``config`` and ``world`` settings, as they read back from the JSON.

    Raises:
        StudyError: unreadable or from an older version (no config), finished, or holding a part
            run with other settings.
    """
    if not path.is_file():
        return {}
    how = "pass --overwrite to run the study again, or set another experiment.output_dir"
    try:
        previous = json.loads(path.read_text())
        changed = {p: _changed(_inputs(previous, p), _inputs(inputs, p)) for p in PARTS if p in previous}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StudyError(f"{path}: not a study record this version can resume ({type(exc).__name__}: {exc}); "
                         f"{how}") from None
    for part, diff in changed.items():
        if diff:
            raise StudyError(f"{path}: its {part} part ran with other settings ({', '.join(diff[:3])}); {how}")
    if all(p in changed for p in cfg.parts):
        raise StudyError(f"{path}: this study is finished ({', '.join(changed)}); {how}")
    return previous


def _write(out: Path, result: dict[str, Any]) -> None:
    """``asvp_study.md`` then ``asvp_study.json`` (what a re-run resumes from), each atomically."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in ((STUDY_MD, study_markdown(result)), (STUDY_JSON, json.dumps(result, indent=1))):
        tmp = out / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def study_markdown(result: dict[str, Any]) -> str:
    """The Markdown report: what ran (and what an earlier run contributed), the tables, the runtime."""
    seconds = result["seconds"]
    ran_now = [p for p in PARTS if p in result and p not in result["earlier"]]
    lines = ["# ASVP study", "", f"`{' '.join(result['command'])}` (git {result['git_sha'][:12]}, torch "
             f"{result['torch']}, {result['threads']} thread(s)); runtime {seconds['total']:.0f} s "
             f"(data {seconds['data']:.0f} s" + "".join(f", {p} {seconds[p]:.0f} s" for p in ran_now) + ")."]
    for part, run in result["earlier"].items():
        lines.append(f"The {part} part ({seconds[part]:.0f} s) is from an earlier run (git {run['git_sha'][:12]}, "
                     f"{run['time_utc']}) with the same seed, data and {part} settings.")
    if result["pending"]:
        lines.append(f"**Not run yet:** {', '.join(result['pending'])} (run the same command again to add it).")
    lines.append("")
    titles = {"restoration": "Restoration (PSNR dB / SSIM on the held-out scene; changes: dB / relative SSIM)",
              "encoder": "Encoder (linear segmentation probe, mIoU %)"}
    tables = {"restoration": restoration_markdown, "encoder": encoder_markdown}
    for part in (p for p in PARTS if p in result):
        lines += [f"## {titles[part]}", "", tables[part](result[part]), ""]
    return "\n".join(lines)
