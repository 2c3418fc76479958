"""The ASVP restoration study: per task, train a teacher, defend it, let an attacker distill students.

Per task (``fog`` dehazing, ``rain`` deraining, ``night`` low-light enhancement) on the synthetic
pairs of :mod:`collab_distill.defense.restoration.data`:

1. train a compact UNet teacher on the training scenes (L1 to the clear render);
2. score it on the test scene with and without ASVP, for each placement (``inline``: perturbed
   features propagate to the output; ``exposed``: output from clean features, perturbed copies
   handed out), plus the inline teacher over a sweep of ``h``;
3. distill one smaller student per source (undefended, inline, exposed) in lockstep, as an
   attacker would (output L1 + feature matching at the exposed layers), and score the students.

Scores are PSNR (dB) and SSIM against the clear renders of the test scene.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from collab_distill.defense.asvp import PLACEMENTS, UNDEFENDED, ASVPConfig, ASVPDefense, as_matrices, perturb, spectrum
from collab_distill.defense.restoration.data import PairedImages, load_task
from collab_distill.defense.restoration.distill import (
    Attacker,
    Source,
    TrainSettings,
    distill_lockstep,
    evaluate,
    plain_source,
    record_outputs,
    train_restorer,
)
from collab_distill.defense.restoration.unet import STAGES, UNet
from collab_distill.ranges import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

log = logging.getLogger(__name__)


@dataclass
class RestorationStudyConfig:
    """Sizes of the restoration study (defaults: about a minute and a half per task on one core)."""

    tasks: list[str] = field(default_factory=lambda: ["fog", "rain", "night"])
    test_scenes: PositiveInt = 1                          # last scenes (by name) of each condition
    test_images: NonNegativeInt = 9                       # evenly spaced test pairs scored (0: all)
    teacher_widths: tuple[PositiveInt, PositiveInt, PositiveInt] = (16, 32, 64)
    student_widths: tuple[PositiveInt, PositiveInt, PositiveInt] = (8, 16, 32)
    teacher: TrainSettings = field(default_factory=lambda: TrainSettings(steps=250))
    student: TrainSettings = field(default_factory=lambda: TrainSettings(steps=150))
    feature_weight: NonNegativeFloat = 1.0                # attacker: weight of the feature term
    relative_features: bool = True                        # attacker: feature error relative to the target's energy
    asvp: ASVPConfig = field(default_factory=lambda: ASVPConfig(layers=["mid", "dec1"], h=2.0))  # placement: both run
    h_sweep: list[PositiveFloat] = field(default_factory=lambda: [1.5, 4.0, 8.0])  # inline teacher only, besides asvp.h
    eval_batch: PositiveInt = 6

    def __post_init__(self) -> None:
        if unknown := [n for n in self.asvp.layers if n not in STAGES]:
            raise ValueError(f"restoration.asvp.layers: {unknown} are not UNet stages {list(STAGES)}")


def _width(widths: tuple[int, int, int], layer: str) -> int:
    """Channels of a UNet stage (``enc0 .. dec0``)."""
    return widths[{"enc0": 0, "enc1": 1, "mid": 2, "dec1": 1, "dec0": 0}[layer]]


@torch.no_grad()
def feature_stats(teacher: UNet, images: torch.Tensor, cfg: ASVPConfig) -> dict[str, dict[str, float]]:
    """Per defended layer on ``images``: mean adaptive/fixed ``k``, top-1 energy share, and the
    relative change ``||A' - A|| / ||A||`` that ASVP makes."""
    with record_outputs(teacher, cfg.layers) as feats:
        teacher(images)
    out = {}
    for name, x in feats.items():
        a = as_matrices(x, cfg.view).float()
        spec = spectrum(a, cfg)
        total = a.square().sum((-2, -1))
        change = (perturb(x, cfg) - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
        out[name] = {"mean_k": spec.rank.float().mean().item(),
                     "top1_energy": (spec.sigma[:, 0].square() / total).mean().item(),
                     "relative_change": change.mean().item()}
    return out


def run_task(condition: str, info_dir: str, cfg: RestorationStudyConfig, seed: int) -> dict[str, Any]:
    """Everything of one task; returns its JSON record (scores, losses, seconds)."""
    start = time.perf_counter()
    data = load_task(info_dir, condition, cfg.test_scenes)
    test: PairedImages = data.test.evenly(cfg.test_images)
    log.info("%s: %d train pairs (%s), %d test pairs (%s)", condition, len(data.train.degraded),
             ", ".join(data.train_scenes), len(test.degraded), ", ".join(data.test_scenes))
    torch.manual_seed(seed)
    teacher = UNet(cfg.teacher_widths)
    teacher_loss = train_restorer(teacher, data.train, cfg.teacher, seed)
    teacher.requires_grad_(False)
    t_teacher = time.perf_counter() - start

    defended = {p: ASVPDefense(teacher, dataclasses.replace(cfg.asvp, placement=p)) for p in PLACEMENTS}
    scores = {"input": evaluate(lambda x: x, test, cfg.eval_batch),
              "teacher": evaluate(teacher, test, cfg.eval_batch)}
    for placement, model in defended.items():
        scores[f"teacher_{placement}"] = evaluate(model, test, cfg.eval_batch)
    sweep = {str(h): evaluate(ASVPDefense(teacher, dataclasses.replace(cfg.asvp, placement="inline", h=h)),
                              test, cfg.eval_batch) for h in cfg.h_sweep}

    sources: dict[str, Source] = {UNDEFENDED: plain_source(teacher, cfg.asvp.layers)}
    sources.update({p: model.forward_exposed for p, model in defended.items()})
    attackers = {}
    for name in sources:
        torch.manual_seed(seed + 1)                      # the same student initialisation for every source
        student = UNet(cfg.student_widths)
        attackers[name] = Attacker(student, cfg.asvp.layers,
                                   [_width(cfg.student_widths, n) for n in cfg.asvp.layers],
                                   [_width(cfg.teacher_widths, n) for n in cfg.asvp.layers])
    t_students = time.perf_counter()
    student_loss = distill_lockstep(attackers, sources, data.train, cfg.student, cfg.feature_weight,
                                    cfg.relative_features, seed + 1)
    t_students = time.perf_counter() - t_students
    for name, attacker in attackers.items():
        scores[f"student_{name}"] = evaluate(attacker.student, test, cfg.eval_batch)
    return {"condition": condition, "train_scenes": data.train_scenes, "test_scenes": data.test_scenes,
            "train_pairs": len(data.train.degraded), "test_pairs": len(test.degraded),
            "test_pairs_available": len(data.test.degraded), "scores": scores,
            "inline_teacher_h_sweep": sweep,
            "features": feature_stats(teacher, test.degraded[:cfg.eval_batch], cfg.asvp),
            "final_loss": {"teacher": teacher_loss, **{f"student_{k}": v for k, v in student_loss.items()}},
            "seconds": {"teacher": t_teacher, "students": t_students, "total": time.perf_counter() - start}}


def run_restoration_study(cfg: RestorationStudyConfig, info_dir: str, seed: int) -> dict[str, Any]:
    """All tasks; the JSON record of the restoration part."""
    return {"config": dataclasses.asdict(cfg), "tasks": [run_task(c, info_dir, cfg, seed) for c in cfg.tasks]}


def _cell(score: dict[str, float]) -> str:
    return f"{score['psnr']:.2f} / {score['ssim']:.3f}"


def _drop(defended: dict[str, float], clean: dict[str, float]) -> str:
    """PSNR change (dB) and relative SSIM change (%) of ``defended`` against ``clean``."""
    return (f"{defended['psnr'] - clean['psnr']:+.2f} dB / "
            f"{100 * (defended['ssim'] - clean['ssim']) / max(clean['ssim'], 1e-12):+.1f} %")


def restoration_markdown(result: dict[str, Any]) -> str:
    """The restoration tables: scores (PSNR dB / SSIM) and changes caused by ASVP."""
    lines = ["| task | input | teacher | teacher + ASVP inline | teacher + ASVP exposed | student <- teacher | "
             "student <- inline | student <- exposed |", "|---|---|---|---|---|---|---|---|"]
    keys = ["input", "teacher", "teacher_inline", "teacher_exposed", f"student_{UNDEFENDED}", "student_inline",
            "student_exposed"]
    for task in result["tasks"]:
        lines.append(f"| {task['condition']} | " + " | ".join(_cell(task["scores"][k]) for k in keys) + " |")
    lines += ["", "| task | teacher change, inline | teacher change, exposed | student change, inline | "
              "student change, exposed |", "|---|---|---|---|---|"]
    for task in result["tasks"]:
        s = task["scores"]
        lines.append(f"| {task['condition']} | {_drop(s['teacher_inline'], s['teacher'])} | "
                     f"{_drop(s['teacher_exposed'], s['teacher'])} | "
                     f"{_drop(s['student_inline'], s[f'student_{UNDEFENDED}'])} | "
                     f"{_drop(s['student_exposed'], s[f'student_{UNDEFENDED}'])} |")
    hs = list(result["tasks"][0]["inline_teacher_h_sweep"]) if result["tasks"] else []
    if hs:
        lines += ["", "| task | " + " | ".join(f"inline teacher, h = {h}" for h in hs) + " |",
                  "|---|" + "---|" * len(hs)]
        for task in result["tasks"]:
            cells = [_cell(task["inline_teacher_h_sweep"][h]) for h in hs]
            lines.append(f"| {task['condition']} | " + " | ".join(cells) + " |")
    lines += ["", "| task | layer | mean k | top-1 energy share | relative feature change |",
              "|---|---|---:|---:|---:|"]
    for task in result["tasks"]:
        for layer, st in task["features"].items():
            lines.append(f"| {task['condition']} | {layer} | {st['mean_k']:.2f} | {st['top1_energy']:.3f} | "
                         f"{st['relative_change']:.3f} |")
    return "\n".join(lines)
