"""The whole ASVP study (``tools/asvp_study.py``): data, the restoration part, the encoder part, tables.

The data is a small synthetic nuScenes-format set with paired clear renders, generated into
``<output_dir>/data`` on first use (or read from ``data_root``) and prepared into info files.
Outputs: ``asvp_study.json`` and ``asvp_study.md`` in ``experiment.output_dir``.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from collab_distill.config import ExperimentConfig, git_revision
from collab_distill.defense.encoder_study import EncoderStudyConfig, encoder_markdown, run_encoder_study
from collab_distill.restoration.study import RestorationStudyConfig, restoration_markdown, run_restoration_study
from data_prep.synthetic.config import SyntheticConfig

log = logging.getLogger(__name__)
Part = Literal["restoration", "encoder"]


def _study_data() -> SyntheticConfig:
    """9 scenes (3 per condition) x 3 keyframes x 6 cameras at 224x126, with paired clear renders."""
    return SyntheticConfig(scenes=9, samples_per_scene=3, image_size=(224, 126), conditions=["fog", "rain", "night"],
                           paired_clear=True)


@dataclass
class ASVPStudyConfig:
    """Top-level schema of ``tools/asvp_study.py`` (``configs/asvp/study.yaml``)."""

    experiment: ExperimentConfig = field(default_factory=lambda: ExperimentConfig(name="asvp_study",
                                                                                  output_dir="runs/asvp_study"))
    parts: list[Part] = field(default_factory=lambda: ["restoration", "encoder"])
    threads: int = 1                     # torch threads; 1 is fastest on a CPU shared with other jobs
    data_root: str = ""                  # existing set with paired clear renders; "" = <output_dir>/data
    data: SyntheticConfig = field(default_factory=_study_data)   # what is generated when the set is missing
    workers: int = 2                     # generation processes
    restoration: RestorationStudyConfig = field(default_factory=RestorationStudyConfig)
    encoder: EncoderStudyConfig = field(default_factory=EncoderStudyConfig)


def prepare_data(cfg: ASVPStudyConfig) -> tuple[Path, float]:
    """The info-file folder of the study's data (generated and prepared when missing) and the seconds it took."""
    from data_prep.nuscenes_infos import prepare
    from data_prep.synthetic.generate import generate

    start = time.perf_counter()
    root = Path(cfg.data_root or Path(cfg.experiment.output_dir) / "data")
    if not (root / cfg.data.version).is_dir():
        log.info("generating the study's synthetic set into %s", root)
        generate(cfg.data, root, workers=cfg.workers, progress=False)
    infos = root / "infos"
    if not (infos / "summary.json").is_file():
        prepare(root, cfg.data.version, infos, workers=1, progress=False)
    return infos, time.perf_counter() - start


def run_study(cfg: ASVPStudyConfig, command: list[str]) -> dict[str, Any]:
    """Run the configured parts; write ``asvp_study.json`` and ``asvp_study.md``; return the record."""
    start = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    info_dir, data_seconds = prepare_data(cfg)
    result: dict[str, Any] = {"command": command, "git_sha": git_revision(), "torch": torch.__version__,
                              "threads": cfg.threads, "cpu": platform.processor() or platform.machine(),
                              "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                              "data": {"info_dir": str(info_dir), "config": dataclasses.asdict(cfg.data)},
                              "seconds": {"data": data_seconds}}
    seed = cfg.experiment.seed
    if "restoration" in cfg.parts:
        result["restoration"] = run_restoration_study(cfg.restoration, str(info_dir), seed)
        result["seconds"]["restoration"] = sum(t["seconds"]["total"] for t in result["restoration"]["tasks"])
    if "encoder" in cfg.parts:
        result["encoder"] = run_encoder_study(cfg.encoder, str(info_dir), seed)
        result["seconds"]["encoder"] = result["encoder"]["seconds"]
    result["seconds"]["total"] = time.perf_counter() - start
    out = Path(cfg.experiment.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "asvp_study.json").write_text(json.dumps(result, indent=1))
    (out / "asvp_study.md").write_text(study_markdown(result))
    return result


def study_markdown(result: dict[str, Any]) -> str:
    """The Markdown report: what ran, the tables, the runtime."""
    seconds = result["seconds"]
    lines = ["# ASVP study", "", f"`{' '.join(result['command'])}` (git {result['git_sha'][:12]}, torch "
             f"{result['torch']}, {result['threads']} thread(s)); runtime {seconds['total']:.0f} s "
             f"(data {seconds['data']:.0f} s" + "".join(f", {k} {seconds[k]:.0f} s" for k in ("restoration", "encoder")
                                                        if k in seconds) + ").", ""]
    if "restoration" in result:
        lines += ["## Restoration (PSNR dB / SSIM on the held-out scene; changes: dB / relative SSIM)", "",
                  restoration_markdown(result["restoration"]), ""]
    if "encoder" in result:
        lines += ["## Encoder (linear segmentation probe, mIoU %)", "", encoder_markdown(result["encoder"]), ""]
    return "\n".join(lines)
