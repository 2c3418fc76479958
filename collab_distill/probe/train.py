"""Train a linear head on a :class:`FeatureBank` and evaluate it per condition tag.

A task (:class:`SegTask`, :class:`DepthTask`) knows its head, its loss and its metric; the loop and
the per-condition bookkeeping are shared. Seeds fix the head's initialisation and the batch order.
"""
from __future__ import annotations

import time
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from collab_distill.data.conditions import CONDITION_TAGS
from collab_distill.data.taxonomy import IGNORE
from collab_distill.engine.optim import WarmupCosine
from collab_distill.models import sample_features
from collab_distill.probe.config import ProbeHeadConfig, ProbeTrainConfig
from collab_distill.probe.features import FeatureBank
from collab_distill.probe.heads import DepthHead, LinearHead, gradient_loss, resize_bilinear, sig_loss
from collab_distill.probe.metrics import ConfusionMatrix, DepthMetrics
from collab_distill.probe.results import finite_or_none

ALL = "all"
#: Result groups, in report order: each condition tag, then every view.
GROUPS = (*CONDITION_TAGS, ALL)


def upsample_to(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """``(B, C, h, w)`` -> ``(B, C, H, W)``, bilinear (``align_corners=False``, as DINOv2)."""
    return resize_bilinear(maps, size)


def values_at_labels(maps: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
    """Bilinearly upsampled ``maps (B, C, h, w)`` read at the labelled pixels of ``label (B, H, W)``.

    Equal to ``upsample_to(maps, (H, W))`` indexed at those pixels, without the full-size tensor.

    Returns:
        ``(n, C)`` values and ``(n,)`` int64 labels.
    """
    height, width = label.shape[-2:]
    if height * maps.shape[-1] != width * maps.shape[-2]:
        raise ValueError(f"map {tuple(maps.shape[-2:])} and label {(height, width)} differ in aspect")
    image, row, col = (label != IGNORE).nonzero(as_tuple=True)
    uv = torch.stack([col, row], dim=1).to(torch.float64)
    return sample_features(maps, uv, image, height / maps.shape[-2]), label[image, row, col].long()


class ProbeTask(Protocol):
    """What the shared loop needs from a task."""

    def build_head(self, in_dim: int) -> nn.Module: ...

    def loss(self, head: nn.Module, bank: FeatureBank, index: Tensor) -> Tensor: ...

    def predict(self, head: nn.Module, bank: FeatureBank, index: Tensor) -> Tensor: ...

    def new_meter(self) -> Any: ...

    def update(self, meter: Any, pred: Tensor, bank: FeatureBank, i: int) -> None: ...

    def summary(self, meter: Any) -> dict[str, Any]: ...


class SegTask:
    """Linear segmentation: BN + 1x1 conv, cross-entropy on labelled pixels, mIoU."""

    def __init__(self, head: ProbeHeadConfig, classes: tuple[str, ...]) -> None:
        self.cfg, self.classes = head, classes

    def build_head(self, in_dim: int) -> nn.Module:
        return LinearHead(in_dim, len(self.classes), batch_norm=self.cfg.batch_norm, upsample=self.cfg.upsample)

    def loss(self, head: nn.Module, bank: FeatureBank, index: Tensor) -> Tensor:
        logits, target = values_at_labels(head(bank.head_input(index)), bank.label[index])
        return F.cross_entropy(logits, target) if len(target) else logits.sum() * 0.0

    def predict(self, head: nn.Module, bank: FeatureBank, index: Tensor) -> Tensor:
        """``(b, H, W)`` uint8 class map."""
        return upsample_to(head(bank.head_input(index)), bank.image_size).argmax(1).to(torch.uint8)

    def new_meter(self) -> ConfusionMatrix:
        return ConfusionMatrix(len(self.classes), IGNORE)

    def update(self, meter: ConfusionMatrix, pred: Tensor, bank: FeatureBank, i: int) -> None:
        meter.update(pred, bank.label[i])

    def summary(self, meter: ConfusionMatrix) -> dict[str, Any]:
        iou = {name: finite_or_none(v) for name, v in zip(self.classes, meter.iou().tolist())}
        return {"pixels": meter.total, "miou": finite_or_none(meter.miou()),
                "accuracy": finite_or_none(meter.accuracy()), "iou": iou}


class DepthTask:
    """Linear depth (lin.1): bins + expectation, SigLoss + w * gradient loss, RMSE / AbsRel / delta."""

    def __init__(self, head: ProbeHeadConfig, gradient_weight: float) -> None:
        self.cfg, self.gradient_weight = head, gradient_weight

    def build_head(self, in_dim: int) -> nn.Module:
        c = self.cfg
        return DepthHead(in_dim, c.num_bins, c.min_depth, c.max_depth, upsample=c.upsample, batch_norm=c.batch_norm)

    def valid(self, depth: Tensor) -> Tensor:
        return (depth > 0) & (depth <= self.cfg.max_depth)

    def loss(self, head: nn.Module, bank: FeatureBank, index: Tensor) -> Tensor:
        pred = upsample_to(head(bank.head_input(index))[:, None], bank.image_size)[:, 0]
        target = bank.depth[index]
        valid = self.valid(target)
        return sig_loss(pred, target, valid) + self.gradient_weight * gradient_loss(pred, target, valid)

    def predict(self, head: nn.Module, bank: FeatureBank, index: Tensor) -> Tensor:
        """``(b, H, W)`` metres, clamped to ``[min_depth, max_depth]``."""
        pred = upsample_to(head(bank.head_input(index))[:, None], bank.image_size)[:, 0]
        return pred.clamp(self.cfg.min_depth, self.cfg.max_depth)

    def new_meter(self) -> DepthMetrics:
        return DepthMetrics()

    def update(self, meter: DepthMetrics, pred: Tensor, bank: FeatureBank, i: int) -> None:
        valid = self.valid(bank.depth[i])
        meter.update(pred[valid], bank.depth[i][valid])

    def summary(self, meter: DepthMetrics) -> dict[str, Any]:
        return {"pixels": meter.pixels, **{k: finite_or_none(v) for k, v in meter.compute().items()}}


def train_head(task: ProbeTask, bank: FeatureBank, cfg: ProbeTrainConfig, seed: int, progress: bool = True
               ) -> tuple[nn.Module, dict[str, float]]:
    """Train a fresh head for ``cfg.iterations`` steps of ``cfg.batch_size`` views (epochs of seeded
    permutations), AdamW with linear warm-up and cosine decay.

    Returns:
        the head (in eval mode) and a log: ``loss_first``, ``loss_last`` (mean of the last 10 steps),
        ``seconds_train``.
    """
    torch.manual_seed(seed)
    head = task.build_head(bank.in_dim)
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(cfg.warmup, cfg.iterations))
    generator = torch.Generator().manual_seed(seed)
    batch = min(cfg.batch_size, len(bank))
    queue = torch.empty(0, dtype=torch.long)
    losses: list[float] = []
    start = time.perf_counter()
    head.train()
    bar = tqdm(range(cfg.iterations), desc="train head", unit="it", disable=not progress)
    for _ in bar:
        if len(queue) < batch:
            queue = torch.cat([queue, torch.randperm(len(bank), generator=generator)])
        index, queue = queue[:batch], queue[batch:]
        loss = task.loss(head, bank, index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    head.eval()
    return head, {"loss_first": losses[0], "loss_last": sum(losses[-10:]) / len(losses[-10:]),
                  "seconds_train": time.perf_counter() - start}


@torch.no_grad()
def evaluate(task: ProbeTask, head: nn.Module, bank: FeatureBank, batch_size: int = 8, progress: bool = True
             ) -> dict[str, dict[str, Any]]:
    """Metrics of ``head`` on ``bank`` per group of :data:`GROUPS` (a view counts for each of its
    tags and for ``all``). Every group is present; ``images`` is 0 where no view has the tag."""
    head.eval()
    meters = {group: task.new_meter() for group in GROUPS}
    images = dict.fromkeys(GROUPS, 0)
    starts = range(0, len(bank), batch_size)
    for start in tqdm(starts, desc="evaluate", unit="batch", disable=not progress):
        index = torch.arange(start, min(start + batch_size, len(bank)))
        pred = task.predict(head, bank, index)
        for j, i in enumerate(index.tolist()):
            for group in (*bank.tags[i], ALL):
                task.update(meters[group], pred[j], bank, i)
                images[group] += 1
    return {group: {"images": images[group], **task.summary(meters[group])} for group in GROUPS}
