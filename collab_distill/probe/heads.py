"""Linear probe heads (DINOv2 protocols) and the depth losses.

* :class:`LinearHead`: optional bilinear upsampling, optional BatchNorm, 1x1 conv. The segmentation
  probe is ``LinearHead(C, classes, batch_norm=True)``; its logits are bilinearly resized to the
  label size by the caller.
* :class:`DepthHead`: ``lin.1``: a ``LinearHead`` to ``num_bins`` channels (no BatchNorm, x4
  upsampling), "linear" bin normalisation (ReLU, +0.1, divide by the sum, as AdaBins) and depth =
  expectation over ``num_bins`` uniform bin centres ``linspace(min_depth, max_depth)``
  (:func:`bin_weights`, :func:`expected_depth`).
* :func:`sig_loss` and :func:`gradient_loss`: the scale-invariant log loss and the multi-scale
  gradient-matching loss of the DINOv2 depth evaluation, with validity masks for sparse ground truth.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BIN_EPS = 0.1     # added after the ReLU in the "linear" bin normalisation
LOG_EPS = 1e-3    # added before the logs of the depth losses
SIG_LAMBDA = 0.15


class LinearHead(nn.Module):
    """``(B, C, h, w)`` features -> ``(B, out_dim, h*up, w*up)`` by [upsample] [BN] 1x1 conv.

    The conv starts from N(0, 0.01) weights and zero bias (mmseg's ``conv_seg`` initialisation).
    """

    def __init__(self, in_dim: int, out_dim: int, batch_norm: bool = True, upsample: int = 1) -> None:
        super().__init__()
        self.upsample = upsample
        self.bn = nn.BatchNorm2d(in_dim) if batch_norm else nn.Identity()
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size=1)
        nn.init.normal_(self.conv.weight, std=0.01)
        nn.init.zeros_(self.conv.bias)

    def forward(self, features: Tensor) -> Tensor:
        if isinstance(self.bn, nn.Identity):
            # a 1x1 conv commutes with bilinear upsampling (its weights sum to 1): convolve the small map
            return self._upsample(self.conv(features))
        return self.conv(self.bn(self._upsample(features)))

    def _upsample(self, x: Tensor) -> Tensor:
        if self.upsample == 1:
            return x
        return resize_bilinear(x, (x.shape[-2] * self.upsample, x.shape[-1] * self.upsample))


@functools.lru_cache(maxsize=32)
def interpolation_matrix(size: int, out_size: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(out_size, size)`` matrix of 1D linear resampling (``align_corners=False``): the operator that
    ``F.interpolate(..., mode="bilinear")`` applies along each axis. Cached: a probe asks for the same
    few sizes at every step (callers must not modify it)."""
    eye = torch.eye(size, dtype=dtype)[:, None, :]                                   # (size, 1, size)
    return F.interpolate(eye, size=out_size, mode="linear", align_corners=False)[:, 0].T


def resize_bilinear(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``(B, C, h, w)`` -> ``(B, C, H, W)``: the same values as ``F.interpolate(x, size,
    mode="bilinear", align_corners=False)``, as two small matmuls (bilinear interpolation is
    separable); several times faster forward and backward on a CPU."""
    rows = interpolation_matrix(x.shape[-2], size[0], x.dtype).to(x.device)          # (H, h)
    cols = interpolation_matrix(x.shape[-1], size[1], x.dtype).to(x.device)          # (W, w)
    return rows @ (x @ cols.T)


def bin_weights(logits: Tensor, eps: float = BIN_EPS) -> Tensor:
    """Unnormalised "linear" bin weights ``relu(x) + eps``; :func:`expected_depth` normalises them."""
    return torch.relu(logits) + eps


def expected_depth(weights: Tensor, centres: Tensor) -> Tensor:
    """Depth ``sum_k p_k c_k`` with ``p = w / sum_k w_k`` from ``(B, K, h, w)`` bin weights and
    ``(K,)`` bin centres -> ``(B, h, w)``.

    Numerator and denominator come from one 1x1 convolution: the same value as normalising the
    weights first, without two more full-size tensors (this is the probe's costliest step on CPU).
    """
    kernel = torch.stack([centres.to(weights.dtype), torch.ones_like(centres, dtype=weights.dtype)])
    sums = F.conv2d(weights, kernel[:, :, None, None])
    return sums[:, 0] / sums[:, 1]


class DepthHead(nn.Module):
    """DINOv2 ``lin.1`` depth head: ``(B, C, h, w)`` -> ``(B, h*up, w*up)`` metres in ``[min, max]``."""

    def __init__(self, in_dim: int, num_bins: int = 256, min_depth: float = 0.001, max_depth: float = 80.0,
                 upsample: int = 4, batch_norm: bool = False) -> None:
        super().__init__()
        self.linear = LinearHead(in_dim, num_bins, batch_norm=batch_norm, upsample=upsample)
        self.min_depth, self.max_depth = min_depth, max_depth
        self.register_buffer("centres", torch.linspace(min_depth, max_depth, num_bins))

    def forward(self, features: Tensor) -> Tensor:
        return expected_depth(bin_weights(self.linear(features)), self.centres)


def sig_loss(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Scale-invariant log loss ``sqrt(Var(g) + 0.15 mean(g)^2)``, ``g = log(pred) - log(gt)`` over
    the ``valid`` elements of the whole batch (any equal shapes; ``Var`` unbiased, as DINOv2)."""
    g = torch.log(pred[valid] + LOG_EPS) - torch.log(target[valid] + LOG_EPS)
    if g.numel() < 2:
        return pred.sum() * 0.0
    return torch.sqrt(g.var() + SIG_LAMBDA * g.mean() ** 2)


def gradient_loss(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Multi-scale gradient matching of the log-depth difference (MegaDepth, as in DINOv2).

    At strides 1, 2, 4, 6 of ``(B, H, W)`` maps: the sum of ``|d(y, x) - d(y+2, x)|`` and
    ``|d(y, x) - d(y, x+2)|`` over pairs where both ends are valid, divided by the number of valid
    pixels at that stride; ``d = log(pred) - log(gt)`` at valid pixels.
    """
    total = pred.sum() * 0.0
    for stride in (1, 2, 4, 6):
        p, t, m = (x[:, ::stride, ::stride] for x in (pred, target, valid))
        d = torch.where(m, torch.log(p + LOG_EPS) - torch.log(t.clamp(min=0) + LOG_EPS), 0.0)
        mf = m.to(d.dtype)
        v = (d[:, :-2] - d[:, 2:]).abs() * mf[:, :-2] * mf[:, 2:]
        h = (d[:, :, :-2] - d[:, :, 2:]).abs() * mf[:, :, :-2] * mf[:, :, 2:]
        total = total + (v.sum() + h.sum()) / mf.sum().clamp(min=1)
    return total


def sparse_gradient_loss(pred: Tensor, target: Tensor, image: Tensor, pixel: Tensor, size: tuple[int, int]) -> Tensor:
    """:func:`gradient_loss` on sparse ground truth: the same value, computed on the valid pixels only.

    Args:
        pred, target: ``(n,)`` metres at the valid pixels.
        image: ``(n,)`` int64 image of each pixel in the batch.
        pixel: ``(n,)`` int64 flat pixel ``y * W + x``.
        size: ``(H, W)`` of the images.

    At each stride ``s``, the pairs ``(y, x)``/``(y + 2s, x)`` and ``(y, x)``/``(y, x + 2s)`` with
    ``y % s == x % s == 0`` where both ends are valid (neighbours found by ``searchsorted`` on sorted
    pixel keys), divided by the number of valid pixels on the stride-``s`` grid.
    """
    height, width = size
    d = torch.log(pred + LOG_EPS) - torch.log(target.clamp(min=0) + LOG_EPS)
    row, col = pixel // width, pixel % width
    key = image * (height * width) + pixel
    total = pred.sum() * 0.0
    for stride in (1, 2, 4, 6):
        on = (row % stride == 0) & (col % stride == 0)
        keys, order = key[on].sort()
        if not len(keys):
            continue
        values, rows, cols = d[on][order], row[on][order], col[on][order]
        pairs = pred.sum() * 0.0
        for step, inside in ((2 * stride * width, rows + 2 * stride < height), (2 * stride, cols + 2 * stride < width)):
            at = torch.searchsorted(keys, keys + step).clamp(max=len(keys) - 1)
            hit = inside & (keys[at] == keys + step)
            pairs = pairs + (values[hit] - values[at[hit]]).abs().sum()
        total = total + pairs / on.sum().clamp(min=1)
    return total
