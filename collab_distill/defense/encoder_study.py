"""ASVP on a ViT image encoder: what the defense costs the encoder, and what it does to a distiller.

For an encoder the features *are* the product, so the two placements mean:

* ``inline``: the chosen blocks' token outputs ``(B, T, D)`` are perturbed inside the forward
  pass; every user (the legitimate probe and the attacker alike) gets the perturbed final features.
* ``exposed``: the encoder's returned features stay clean; only the tokens handed to a distiller
  (``ASVPDefense.forward_exposed``) are perturbed. Its own probe score is unchanged by construction.

Protocol: the teacher (``teacher_weights``, e.g. a trained ``weights/student.safetensors``, or a
seeded random initialisation) is probed with the project's linear segmentation probe
(:mod:`collab_distill.probe`: BN + 1x1 conv on the last block's normed patch tokens, lidarseg points
projected into the images, mIoU over the 16 classes, per condition). A smaller student ViT is
distilled from each source (undefended, inline, exposed) by matching the teacher's tokens at the
defended layer (linear adapter, cosine distance per token), from the same initialisation and the
same batches, then probed the same way. Also reported: the cosine of the defended teacher's final
patch features to the undefended teacher's (the defense's cost in feature space).
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from collab_distill.config import load_config
from collab_distill.data.taxonomy import LIDARSEG_CLASSES
from collab_distill.defense.asvp import PLACEMENTS, UNDEFENDED, ASVPConfig, ASVPDefense, DefendedOutput
from collab_distill.defense.restoration.distill import record_outputs
from collab_distill.losses import cosine_distance
from collab_distill.models import ImageEncoder, ImageEncoderConfig
from collab_distill.probe.config import ProbeConfig
from collab_distill.probe.encoder import load_encoder
from collab_distill.probe.run import build_task, build_views
from collab_distill.probe.store_build import build_probe_store
from collab_distill.probe.train import StoreViews, evaluate, train_head
from collab_distill.ranges import PositiveFloat, PositiveInt

log = logging.getLogger(__name__)


@dataclass
class EncoderStudyConfig:
    """The encoder part of the ASVP study (defaults: a couple of minutes on one core)."""

    probe_config: str = "configs/probe/seg_linear.yaml"   # the probe recipe; data/eval/iterations set below
    image_size: tuple[int, int] = (126, 224)              # (H, W), multiples of 14
    teacher: str = "vit_tiny_patch14_cpu"
    teacher_weights: str = "random"                       # a trained encoder when one exists
    student: str = "vit_pico_patch14_cpu"
    asvp: ASVPConfig = field(default_factory=lambda: ASVPConfig(layers=["vit.blocks.5"], h=2.0))  # placement: both run
    distill_steps: PositiveInt = 200
    distill_batch: PositiveInt = 8
    distill_lr: PositiveFloat = 1e-3
    probe_iterations: PositiveInt = 200

    def __post_init__(self) -> None:
        if len(self.asvp.layers) != 1:
            raise ValueError(f"encoder.asvp.layers: the encoder study defends one block, got {self.asvp.layers}")


def _probe_config(cfg: EncoderStudyConfig, info_dir: str, seed: int) -> ProbeConfig:
    overrides = [f"data.info_dir={info_dir}", f"data.image_size=[{cfg.image_size[0]},{cfg.image_size[1]}]",
                 f"train.iterations={cfg.probe_iterations}", "eval.fidelity=false", "eval.showcase=0",
                 f"experiment.seed={seed}"]
    return load_config(cfg.probe_config, overrides, schema=ProbeConfig)


def _views(dataset: Any) -> list[list[Any]]:
    """All views of a probe dataset in memory, one list per keyframe (reused for every encoder)."""
    return [dataset[i] for i in range(len(dataset))]


def _probe(encoder: nn.Module, train: list[list[Any]], test: list[list[Any]], probe: ProbeConfig,
           seed: int) -> dict[str, Any]:
    """mIoU per condition of a fresh linear head on ``encoder``'s last-block normed patch maps (read from
    probe stores of this encoder, built in a temporary folder and dropped after)."""
    task = build_task(probe, LIDARSEG_CLASSES)
    size = list(probe.data.image_size)
    with tempfile.TemporaryDirectory(prefix="encoder_study_") as folder:
        stores = [build_probe_store(encoder, views, range(len(views)),
                                    {"encoder": {"image_size": size, "blocks": [-1]}, "views": {"split": split}},
                                    Path(folder) / split, ("label", "depth"), progress=False)
                  for split, views in (("train", train), ("test", test))]
        train_set, test_set = (StoreViews(store, norm=True, cls_token=False) for store in stores)
        head, _ = train_head(task, train_set, probe.train, seed, progress=False)
        return {group: r.get("miou") for group, r in evaluate(task, head, test_set, progress=False).items()}


@torch.no_grad()
def patch_cosine(encoder: nn.Module, reference: nn.Module, images: Tensor, batch: int) -> float:
    """Mean cosine between ``encoder``'s and ``reference``'s final patch features on ``images``."""
    values = []
    for start in range(0, len(images), batch):
        x = images[start:start + batch]
        values.append(F.cosine_similarity(encoder(x).patch[0], reference(x).patch[0], dim=1).flatten(1).mean(1))
    return torch.cat(values).mean().item()


@torch.no_grad()
def _targets(query: Any, images: Tensor, layer: str, batch: int) -> Tensor:
    """``(N, T, D)`` tokens of ``layer`` that ``query`` (images -> DefendedOutput) hands out."""
    return torch.cat([query(images[s:s + batch]).features[layer] for s in range(0, len(images), batch)])


def _distill(student: ImageEncoder, layer: str, targets: Tensor, images: Tensor, cfg: EncoderStudyConfig,
             seed: int) -> float:
    """Match the student's last-block tokens (linear adapter) to ``targets`` by cosine; returns the final loss."""
    adapter = nn.Linear(student.embed_dim, targets.shape[-1])
    student_layer = f"vit.blocks.{student.depth - 1}"
    params = [*student.parameters(), *adapter.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.distill_lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(cfg.distill_steps):
        index = torch.randint(len(images), (cfg.distill_batch,), generator=generator)
        with record_outputs(student, [student_layer]) as feats:
            student(images[index])
        loss = cosine_distance(adapter(feats[student_layer]), targets[index]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    tail = max(1, len(losses) // 10)
    return sum(losses[-tail:]) / tail


def run_encoder_study(cfg: EncoderStudyConfig, info_dir: str, seed: int) -> dict[str, Any]:
    """The encoder part; returns its JSON record."""
    start = time.perf_counter()
    layer = cfg.asvp.layers[0]
    probe = _probe_config(cfg, info_dir, seed)
    train_views, test_views = _views(build_views(probe, train=True)), _views(build_views(probe, train=False))
    images = torch.stack([v.image for item in train_views for v in item])
    test_images = torch.stack([v.image for item in test_views for v in item])
    teacher = load_encoder(ImageEncoderConfig(name=cfg.teacher, blocks=[-1], norm=True), cfg.teacher_weights,
                           cfg.image_size, seed)
    defended = {p: ASVPDefense(teacher, dataclasses.replace(cfg.asvp, placement=p)) for p in PLACEMENTS}
    log.info("encoder study: %d train / %d test images, teacher %s (%s), layer %s", len(images), len(test_images),
             cfg.teacher, cfg.teacher_weights, layer)

    rows: dict[str, dict[str, Any]] = {f"teacher_{UNDEFENDED}": {"miou": _probe(teacher, train_views, test_views,
                                                                               probe, seed), "patch_cosine": 1.0}}
    for placement, model in defended.items():
        rows[f"teacher_{placement}"] = {"miou": _probe(model, train_views, test_views, probe, seed),
                                        "patch_cosine": patch_cosine(model, teacher, test_images, cfg.distill_batch)}

    def plain(x: Tensor) -> DefendedOutput:
        with record_outputs(teacher, [layer]) as feats:
            out = teacher(x)
        return DefendedOutput(out, dict(feats))

    sources = {UNDEFENDED: plain, **{p: m.forward_exposed for p, m in defended.items()}}
    for name, query in sources.items():
        targets = _targets(query, images, layer, cfg.distill_batch)
        torch.manual_seed(seed + 1)                    # the same student initialisation for every source
        student = ImageEncoder(ImageEncoderConfig(name=cfg.student, weights="random", blocks=[-1], norm=True),
                               cfg.image_size).train()
        loss = _distill(student, layer, targets, images, cfg, seed + 1)
        student.freeze()
        rows[f"student_{name}"] = {"miou": _probe(student, train_views, test_views, probe, seed),
                                   "patch_cosine": None, "distill_loss": loss}
    return {"config": dataclasses.asdict(cfg), "train_images": len(images), "test_images": len(test_images),
            "rows": rows, "seconds": time.perf_counter() - start}


def encoder_markdown(result: dict[str, Any]) -> str:
    """The encoder table: probe mIoU (%) overall and per condition, and the feature cosine."""
    groups = [g for g in ("all", "fog", "rain", "night", "snow", "clear")
              if any(row["miou"].get(g) is not None for row in result["rows"].values())]
    lines = ["| encoder | " + " | ".join(f"mIoU {g}" for g in groups) + " | patch cosine to undefended teacher |",
             "|---|" + "---:|" * (len(groups) + 1)]
    for name, row in result["rows"].items():
        cells = [f"{100 * row['miou'][g]:.1f}" if row["miou"].get(g) is not None else "-" for g in groups]
        cosine = f"{row['patch_cosine']:.3f}" if row["patch_cosine"] is not None else "-"
        lines.append(f"| {name.replace('_', ' ')} | " + " | ".join(cells) + f" | {cosine} |")
    return "\n".join(lines)
