"""Losses shared by the methods, with per-sample reduction.

Every pair or token loss is first averaged within its sample (or image), then over samples: each
sample weighs the same whatever its number of pairs, and the mean over a total batch equals the mean
of the per-process means when each process holds the same number of samples (DDP averages them).
The one exception is stage 1's optional ScaLR form (:func:`normalized_l2`, averaged over the pairs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """``1 - cos(a, b)`` along the last dimension: ``(..., D), (..., D) -> (...)``.

    Equal to half the *squared* L2 distance of the normalised vectors; ScaLR's loss is the distance
    itself (:func:`normalized_l2`)."""
    return 1.0 - F.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-6)


#: Squared distances below this count as 0 in :func:`normalized_l2` (distances below 1e-6).
_COINCIDENT_SQ = 1e-12


def normalized_l2(a: Tensor, b: Tensor) -> Tensor:
    """``‖a/‖a‖ − b/‖b‖‖₂`` along the last dimension: ``(..., D), (..., D) -> (...)``, in ``[0, 2]``.

    ScaLR's distillation loss per pair; equal to ``√(2 − 2 cos(a, b))``. The square root has an
    infinite derivative at 0, so where the two directions coincide (distance < 1e-6) the value and
    its gradient are 0, a subgradient of the norm there; elsewhere the gradient is the usual unit
    vector and never overflows.
    """
    diff = F.normalize(a.float(), dim=-1, eps=1e-12) - F.normalize(b.float(), dim=-1, eps=1e-12)
    squared = diff.square().sum(-1)
    apart = squared > _COINCIDENT_SQ
    # sqrt only of values > _COINCIDENT_SQ: its derivative is finite on both branches of the where
    return torch.where(apart, squared.clamp_min(_COINCIDENT_SQ).sqrt(), torch.zeros_like(squared))


def grouped_mean(values: Tensor, group: Tensor, num_groups: int) -> Tensor:
    """Mean over groups of the within-group means of ``values (P,)``; ``group (P,)`` in ``[0, num_groups)``.

    Groups without values are left out. Returns a scalar (0 when ``P == 0``, still differentiable)."""
    if values.numel() == 0:
        return values.sum()
    sums = values.new_zeros(num_groups).index_add(0, group, values)
    counts = torch.bincount(group, minlength=num_groups).to(values.dtype)
    present = counts > 0
    return (sums[present] / counts[present]).mean()


def attention_kl(teacher_attn: Tensor, student_attn: Tensor, num_prefix: int) -> Tensor:
    """KL(teacher || student) of the CLS -> patch attention, averaged over heads, per image.

    Args:
        teacher_attn, student_attn: ``(B, heads, T, T)`` attention probabilities.
        num_prefix: CLS + register tokens in front of the patch tokens.

    Returns:
        ``(B,)`` KL divergences of the renormalised CLS rows restricted to patch tokens.
    """
    def cls_to_patch(attn: Tensor) -> Tensor:
        row = attn[:, :, 0, num_prefix:].float()
        return row / row.sum(-1, keepdim=True).clamp_min(1e-12)

    p, q = cls_to_patch(teacher_attn), cls_to_patch(student_attn)
    kl = (p * (p.clamp_min(1e-12).log() - q.clamp_min(1e-12).log())).sum(-1)
    return kl.mean(1)


def patch_mean(features: Tensor, patch_key: Tensor) -> tuple[Tensor, Tensor]:
    """Mean feature of the points that fall in each patch.

    Args:
        features: ``(P, D)`` per-pair features.
        patch_key: ``(P,)`` int64 flat patch index (image, row, column).

    Returns:
        ``(K, D)`` means of the ``K`` distinct patches and their ``(K,)`` keys (sorted).
    """
    keys, inverse = torch.unique(patch_key, return_inverse=True)
    sums = features.new_zeros(len(keys), features.shape[1]).index_add(0, inverse, features)
    counts = torch.bincount(inverse, minlength=len(keys)).to(features.dtype)
    return sums / counts[:, None], keys
