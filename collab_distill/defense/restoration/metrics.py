"""Image-quality metrics on ``(B, 3, H, W)`` images in ``[0, 1]``: PSNR and SSIM, per image.

SSIM is Wang et al. (2004): an 11x11 Gaussian window with sigma 1.5, ``C1 = (0.01 L)^2``,
``C2 = (0.03 L)^2`` with ``L = 1``, computed per channel on the valid region (no padding), averaged
over channels and pixels. It matches ``skimage``'s ``structural_similarity(..., gaussian_weights=True,
use_sample_covariance=False, data_range=1)``; ``tests/test_asvp.py`` checks it against kornia.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """``(B,)`` PSNR in dB of ``pred`` against ``target`` (both clamped to ``[0, 1]``)."""
    mse = (pred.clamp(0, 1) - target.clamp(0, 1)).square().flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-10))


def _gaussian_window(channels: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``(channels, 1, 11, 11)`` normalised Gaussian kernel for a depthwise convolution."""
    x = torch.arange(SSIM_WINDOW, dtype=dtype, device=device) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-x.square() / (2 * SSIM_SIGMA ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW)


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """``(B,)`` mean SSIM of ``pred`` against ``target`` (both clamped to ``[0, 1]``, at least 11x11)."""
    pred, target = pred.clamp(0, 1).double(), target.clamp(0, 1).double()
    channels = pred.shape[1]
    window = _gaussian_window(channels, pred.dtype, pred.device)

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(x, window, groups=channels)

    mu_p, mu_t = blur(pred), blur(target)
    var_p = blur(pred * pred) - mu_p.square()
    var_t = blur(target * target) - mu_t.square()
    cov = blur(pred * target) - mu_p * mu_t
    ssim_map = ((2 * mu_p * mu_t + SSIM_C1) * (2 * cov + SSIM_C2)) / \
        ((mu_p.square() + mu_t.square() + SSIM_C1) * (var_p + var_t + SSIM_C2))
    return ssim_map.flatten(1).mean(1).float()
