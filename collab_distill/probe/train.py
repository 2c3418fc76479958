"""Train a linear head streaming from a probe store and evaluate it per condition tag.

A :class:`StoreViews` dataset reads store rows in DataLoader workers (the head's input with the
final norm applied at read time, and the view's sparse targets); :func:`train_head` draws the same
seeded batches as a shuffled epoch loop (:class:`SeededBatches`) and :func:`evaluate` streams the
views once, accumulating one meter per group of the store's tag vocabulary (:func:`evaluation_groups`).
Nothing here holds a split in memory. A task
(:class:`SegTask`, :class:`DepthTask`) knows its head, its loss and its metric on sparse targets.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from collab_distill.data.conditions import CONDITION_TAGS
from collab_distill.data.taxonomy import IGNORE
from collab_distill.engine.optim import WarmupCosine
from collab_distill.models import sample_features
from collab_distill.probe.config import ProbeHeadConfig, ProbeTrainConfig
from collab_distill.probe.data import ALL, ordered_tags
from collab_distill.probe.heads import DepthHead, LinearHead, resize_bilinear, sig_loss, sparse_gradient_loss
from collab_distill.probe.metrics import ConfusionMatrix, DepthMetrics
from collab_distill.probe.results import finite_or_none
from collab_distill.probe.store import ProbeStore

#: Result groups of a nuScenes-format set, in report order: each condition tag, then every view.
GROUPS = (*CONDITION_TAGS, ALL)


def evaluation_groups(vocabulary: Sequence[str]) -> tuple[str, ...]:
    """The result groups of a store with tag ``vocabulary``: its tags (:func:`~collab_distill.probe.data.
    ordered_tags`: the condition tags first, in their order, then the others sorted), then ``all``;
    :data:`GROUPS` for the five condition tags."""
    return (*ordered_tags(vocabulary), ALL)


def upsample_to(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """``(B, C, h, w)`` -> ``(B, C, H, W)``, bilinear (``align_corners=False``, as DINOv2)."""
    return resize_bilinear(maps, size)


def values_at_pixels(maps: Tensor, image: Tensor, pixel: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly upsampled ``maps (B, C, h, w)`` read at flat pixels ``pixel (n,)`` (``y * W + x`` of an
    ``(H, W)`` = ``size`` image) of images ``image (n,)``: ``(n, C)``, equal to ``upsample_to(maps,
    size)`` indexed there, without the full-size tensor."""
    height, width = size
    if height * maps.shape[-1] != width * maps.shape[-2]:
        raise ValueError(f"map {tuple(maps.shape[-2:])} and image {(height, width)} differ in aspect")
    uv = torch.stack([pixel % width, pixel // width], dim=1).to(torch.float64)
    return sample_features(maps, uv, image, height / maps.shape[-2])


@dataclass
class SparseBatch:
    """``B`` store views: ``features (B, C', h, w)`` float32 head input; the targets of all of them as
    flat ``(n,)`` tensors: ``image`` (which view, int64), ``pixel`` (flat ``y * W + x``, int64),
    ``label`` (int64, ``IGNORE`` = none), ``depth`` (float32 metres, 0 = none); ``tags`` (B,) int64
    bitmasks (the store's vocabulary); ``size`` the image size ``(H, W)``."""

    features: Tensor
    image: Tensor
    pixel: Tensor
    label: Tensor
    depth: Tensor
    tags: Tensor
    size: tuple[int, int]


class StoreViews(Dataset):
    """Store views as head input and sparse targets (read in the DataLoader workers).

    Args:
        store: the probe store.
        norm: apply the final LayerNorm (the head reads normed tokens).
        cls_token: concatenate the CLS tokens to every position.
        views: the store's views served, in order (default: all of them).
    """

    def __init__(self, store: ProbeStore, norm: bool, cls_token: bool, views: Sequence[int] | None = None) -> None:
        self.store, self.norm, self.cls_token = store, norm, cls_token
        self.views = range(len(store)) if views is None else views

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, view: int) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
        """``features (C', h, w)``, ``pixel``, ``label``, ``depth`` (n,) and the tag bitmask."""
        return self.__getitems__([view])[0]

    def __getitems__(self, views: list[int]) -> list[tuple[Tensor, Tensor, Tensor, Tensor, int]]:
        """The items of ``views`` read together (what a DataLoader asks for a batch)."""
        rows = [self.views[v] for v in views]
        features = self.store.head_input(rows, self.norm, self.cls_token)
        return [(x, *targets) for x, targets in zip(features, self.store.sparse(rows))]

    def collate(self, items: list[tuple[Tensor, Tensor, Tensor, Tensor, int]]) -> SparseBatch:
        """``collate_fn``: the items as one :class:`SparseBatch`."""
        image = torch.cat([torch.full((len(item[1]),), i, dtype=torch.long) for i, item in enumerate(items)])
        return SparseBatch(torch.stack([item[0] for item in items]), image,
                           *(torch.cat([item[k] for item in items]) for k in (1, 2, 3)),
                           torch.tensor([item[4] for item in items], dtype=torch.long), self.store.image_size)

    @property
    def in_dim(self) -> int:
        """Channels of the head input."""
        return self.store.in_dim * (2 if self.cls_token else 1)


class SeededBatches(Sampler[list[int]]):
    """``iterations`` batches of ``batch_size`` views (at most all of them): epochs of seeded random
    permutations, a batch running across an epoch boundary as needed; the same for the same seed."""

    def __init__(self, views: int, batch_size: int, iterations: int, seed: int) -> None:
        self.views, self.batch, self.iterations, self.seed = views, min(batch_size, views), iterations, seed

    def __len__(self) -> int:
        return self.iterations

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed)
        queue = torch.empty(0, dtype=torch.long)
        for _ in range(self.iterations):
            if len(queue) < self.batch:
                queue = torch.cat([queue, torch.randperm(self.views, generator=generator)])
            index, queue = queue[:self.batch], queue[self.batch:]
            yield index.tolist()


class ProbeTask(Protocol):
    """What the shared loop needs from a task."""

    def build_head(self, in_dim: int) -> nn.Module: ...

    def loss(self, head: nn.Module, batch: SparseBatch) -> Tensor: ...

    def predict_points(self, head: nn.Module, batch: SparseBatch) -> tuple[Tensor, Tensor, Tensor]: ...

    def predict(self, head: nn.Module, features: Tensor, size: tuple[int, int]) -> Tensor: ...

    def new_meter(self) -> Any: ...

    def update(self, meter: Any, pred: Tensor, target: Tensor) -> None: ...

    def summary(self, meter: Any) -> dict[str, Any]: ...


class SegTask:
    """Linear segmentation: BN + 1x1 conv, cross-entropy on labelled pixels, mIoU."""

    def __init__(self, head: ProbeHeadConfig, classes: tuple[str, ...]) -> None:
        self.cfg, self.classes = head, classes

    def build_head(self, in_dim: int) -> nn.Module:
        return LinearHead(in_dim, len(self.classes), batch_norm=self.cfg.batch_norm, upsample=self.cfg.upsample)

    def _logits(self, head: nn.Module, batch: SparseBatch) -> tuple[Tensor, Tensor, Tensor]:
        keep = batch.label != IGNORE
        logits = values_at_pixels(head(batch.features), batch.image[keep], batch.pixel[keep], batch.size)
        return logits, batch.label[keep], batch.image[keep]

    def loss(self, head: nn.Module, batch: SparseBatch) -> Tensor:
        logits, target, _ = self._logits(head, batch)
        return F.cross_entropy(logits, target) if len(target) else logits.sum() * 0.0

    def predict_points(self, head: nn.Module, batch: SparseBatch) -> tuple[Tensor, Tensor, Tensor]:
        """Classes predicted at the labelled pixels, their labels and views."""
        logits, target, image = self._logits(head, batch)
        return logits.argmax(1), target, image

    def predict(self, head: nn.Module, features: Tensor, size: tuple[int, int]) -> Tensor:
        """``(b, H, W)`` uint8 class map (the showcase's dense prediction)."""
        return upsample_to(head(features), size).argmax(1).to(torch.uint8)

    def new_meter(self) -> ConfusionMatrix:
        return ConfusionMatrix(len(self.classes), IGNORE)

    def update(self, meter: ConfusionMatrix, pred: Tensor, target: Tensor) -> None:
        meter.update(pred, target)

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

    def _depths(self, head: nn.Module, batch: SparseBatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        valid = self.valid(batch.depth)
        image, pixel = batch.image[valid], batch.pixel[valid]
        pred = values_at_pixels(head(batch.features)[:, None], image, pixel, batch.size)[:, 0]
        return pred, batch.depth[valid], image, pixel

    def loss(self, head: nn.Module, batch: SparseBatch) -> Tensor:
        pred, target, image, pixel = self._depths(head, batch)
        every = torch.ones_like(target, dtype=torch.bool)
        return sig_loss(pred, target, every) + self.gradient_weight * sparse_gradient_loss(
            pred, target, image, pixel, batch.size)

    def predict_points(self, head: nn.Module, batch: SparseBatch) -> tuple[Tensor, Tensor, Tensor]:
        """Metres (clamped to ``[min_depth, max_depth]``) at the valid pixels, their ground truth and views."""
        pred, target, image, _ = self._depths(head, batch)
        return pred.clamp(self.cfg.min_depth, self.cfg.max_depth), target, image

    def predict(self, head: nn.Module, features: Tensor, size: tuple[int, int]) -> Tensor:
        """``(b, H, W)`` metres, clamped to ``[min_depth, max_depth]`` (the showcase's dense prediction)."""
        return upsample_to(head(features)[:, None], size)[:, 0].clamp(self.cfg.min_depth, self.cfg.max_depth)

    def new_meter(self) -> DepthMetrics:
        return DepthMetrics()

    def update(self, meter: DepthMetrics, pred: Tensor, target: Tensor) -> None:
        meter.update(pred, target)

    def summary(self, meter: DepthMetrics) -> dict[str, Any]:
        return {"pixels": meter.pixels, **{k: finite_or_none(v) for k, v in meter.compute().items()}}


def train_head(task: ProbeTask, views: StoreViews, cfg: ProbeTrainConfig, seed: int, num_workers: int = 0,
               progress: bool = True) -> tuple[nn.Module, dict[str, float]]:
    """Train a fresh head for ``cfg.iterations`` steps of ``cfg.batch_size`` views (epochs of seeded
    permutations, :class:`SeededBatches`) read from the store by ``num_workers`` DataLoader workers,
    AdamW with linear warm-up and cosine decay.

    Returns:
        the head (in eval mode) and a log: ``loss_first``, ``loss_last`` (mean of the last 10 steps),
        ``seconds_train``.
    """
    torch.manual_seed(seed)
    head = task.build_head(views.in_dim)
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(cfg.warmup, cfg.iterations))
    loader = DataLoader(views, batch_sampler=SeededBatches(len(views), cfg.batch_size, cfg.iterations, seed),
                        num_workers=num_workers, collate_fn=views.collate)
    losses: list[float] = []
    start = time.perf_counter()
    head.train()
    bar = tqdm(loader, desc="train head", unit="it", disable=not progress)
    for batch in bar:
        loss = task.loss(head, batch)
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
def evaluate(task: ProbeTask, head: nn.Module, views: StoreViews, batch_size: int = 8, num_workers: int = 0,
             progress: bool = True) -> dict[str, dict[str, Any]]:
    """Metrics of ``head`` on the store's views per group of :func:`evaluation_groups` of its tag
    vocabulary (a view counts for each of its tags and for ``all``), streaming the store once. Every
    group is present; ``images`` is 0 where no view has the tag."""
    head.eval()
    vocabulary = views.store.tags_vocabulary
    groups = evaluation_groups(vocabulary)
    meters = {group: task.new_meter() for group in groups}
    images = dict.fromkeys(groups, 0)
    loader = DataLoader(views, batch_size=batch_size, num_workers=num_workers, collate_fn=views.collate)
    for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not progress):
        pred, target, image = task.predict_points(head, batch)
        for j, bits in enumerate(batch.tags.tolist()):
            mine = image == j
            tags = [tag for i, tag in enumerate(vocabulary) if bits >> i & 1 and tag in meters]
            for group in (*tags, ALL):
                task.update(meters[group], pred[mine], target[mine])
                images[group] += 1
    return {group: {"images": images[group], **task.summary(meters[group])} for group in groups}
