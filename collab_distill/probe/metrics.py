"""Probe metrics: a confusion matrix for (m)IoU and the standard monocular-depth errors.

Both are accumulators: ``update`` any number of times, then read the results. They work on flat or
shaped tensors alike, so the 2D probes and a 3D (per-point) LiDAR probe share them.

* mIoU is the mean IoU over the classes that occur in the evaluated ground truth **or** in the
  predictions (union > 0), as mmseg and the nuScenes devkit compute it: a class predicted but absent
  from the ground truth has IoU 0 and lowers the mean; a class absent from both has IoU ``nan``
  (reported as null) and is left out (:data:`MIOU_CONVENTION`, written into every result recipe).
* Depth errors are computed per image over its valid pixels and averaged over images (the Eigen /
  KITTI / NYUv2 convention): RMSE (m), AbsRel, and delta_k = share of pixels with
  ``max(pred/gt, gt/pred) < 1.25**k`` (strictly).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

MIOU_CONVENTION = ("mean over classes present in ground truth or prediction (IoU 0 for predicted-only "
                   "classes), as mmseg / nuScenes devkit")


class ConfusionMatrix:
    """``(K, K)`` int64 counts, rows = ground truth, columns = prediction.

    Args:
        num_classes: ``K``; valid labels are ``0 .. K-1``.
        ignore_index: ground-truth value that is skipped (any other out-of-range label is an error).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Count ``pred`` against ``target`` (same number of elements, integer class indices).

        Raises:
            ValueError: sizes differ, or a label/prediction outside ``0 .. K-1`` (other than ignore).
        """
        pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
        if pred.numel() != target.numel():
            raise ValueError(f"pred has {pred.numel()} elements, target {target.numel()}")
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        k = self.num_classes
        for name, values in (("target", target), ("pred", pred)):
            if values.numel() and (values.min() < 0 or values.max() >= k):
                raise ValueError(f"{name} holds a class outside 0..{k - 1} (ignore_index is {self.ignore_index})")
        self.matrix += torch.bincount(target * k + pred, minlength=k * k).view(k, k).cpu()

    def merge(self, other: "ConfusionMatrix") -> None:
        """Add the counts of another matrix of the same size."""
        self.matrix += other.matrix

    @property
    def present(self) -> Tensor:
        """``(K,)`` bool: classes with at least one ground-truth or predicted element (union > 0)."""
        return (self.matrix.sum(0) + self.matrix.sum(1)) > 0

    @property
    def total(self) -> int:
        """Number of counted (non-ignored) elements."""
        return int(self.matrix.sum())

    def iou(self) -> Tensor:
        """``(K,)`` float64 IoU = TP / (TP + FP + FN); ``nan`` for classes absent from both the ground
        truth and the predictions (0 for a class only predicted)."""
        m = self.matrix.double()
        tp = m.diagonal()
        union = m.sum(0) + m.sum(1) - tp
        iou = tp / union.clamp(min=1)
        return torch.where(self.present, iou, torch.full_like(iou, math.nan))

    def miou(self) -> float:
        """Mean IoU over the :attr:`present` classes (:data:`MIOU_CONVENTION`); ``nan`` when nothing
        was counted."""
        iou = self.iou()[self.present]
        return float(iou.mean()) if iou.numel() else math.nan

    def accuracy(self) -> float:
        """Share of counted elements predicted right (``nan`` when none)."""
        total = self.total
        return float(self.matrix.diagonal().sum()) / total if total else math.nan


class DepthMetrics:
    """Per-image depth errors averaged over images.

    ``update`` takes one image's predictions and ground truth at its valid pixels (any shape);
    elements with ``target <= 0`` or non-finite targets are skipped, as are images with none left.
    Predictions are taken as given: clamp them to the probe's range first.
    """

    NAMES = ("rmse", "abs_rel", "delta1", "delta2", "delta3")

    def __init__(self) -> None:
        self.sums = dict.fromkeys(self.NAMES, 0.0)
        self.images = 0
        self.pixels = 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one image: ``pred`` and ``target`` with the same number of elements, metres."""
        pred, target = pred.reshape(-1).double(), target.reshape(-1).double()
        if pred.numel() != target.numel():
            raise ValueError(f"pred has {pred.numel()} elements, target {target.numel()}")
        valid = torch.isfinite(target) & (target > 0)
        pred, target = pred[valid], target[valid]
        if not target.numel():
            return
        ratio = torch.maximum(pred / target, target / pred)
        ratio = torch.where(pred > 0, ratio, math.inf)  # a non-positive prediction is never within
        values = {"rmse": float(((pred - target) ** 2).mean().sqrt()),
                  "abs_rel": float(((pred - target).abs() / target).mean())}
        for k in (1, 2, 3):
            values[f"delta{k}"] = float((ratio < 1.25 ** k).double().mean())
        for name, value in values.items():
            self.sums[name] += value
        self.images += 1
        self.pixels += int(target.numel())

    def merge(self, other: "DepthMetrics") -> None:
        """Add the images of another accumulator."""
        for name in self.NAMES:
            self.sums[name] += other.sums[name]
        self.images += other.images
        self.pixels += other.pixels

    def compute(self) -> dict[str, float]:
        """``rmse``, ``abs_rel``, ``delta1..3`` (``nan`` when no image had a valid pixel)."""
        return {name: self.sums[name] / self.images if self.images else math.nan for name in self.NAMES}
