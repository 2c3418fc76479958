"""A compact residual UNet for image restoration (the ASVP study's teacher and student).

Two down-sampling stages, one bottleneck, two up-sampling stages with skip connections, and a
1x1 head that predicts a residual: ``out = x + head(dec0)``. Named stages (the layers ASVP and a
feature distiller address): ``enc0`` (full resolution, ``w0`` channels), ``enc1`` (1/2, ``w1``),
``mid`` (1/4, ``w2``), ``dec1`` (1/2, ``w1``), ``dec0`` (full, ``w0``), ``head`` (3 channels).
Any input size works: it is padded (replicate) to a multiple of 4 and cropped back.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

STAGES = ("enc0", "enc1", "mid", "dec1", "dec0")


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions with GELU; the first may stride by 2."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GELU(), nn.Conv2d(c_out, c_out, 3, 1, 1), nn.GELU())


class UNet(nn.Module):
    """Residual UNet with widths ``(w0, w1, w2)``; ``(B, 3, H, W)`` in, ``(B, 3, H, W)`` out."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        w0, w1, w2 = widths
        self.widths = tuple(widths)
        self.enc0 = ConvBlock(3, w0)
        self.enc1 = ConvBlock(w0, w1, stride=2)
        self.mid = ConvBlock(w1, w2, stride=2)
        self.dec1 = ConvBlock(w2 + w1, w1)
        self.dec0 = ConvBlock(w1 + w0, w0)
        self.head = nn.Conv2d(w0, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        padded = F.pad(x, (0, -w % 4, 0, -h % 4), mode="replicate")
        e0 = self.enc0(padded)
        e1 = self.enc1(e0)
        m = self.mid(e1)
        d1 = self.dec1(torch.cat([_up(m), e1], 1))
        d0 = self.dec0(torch.cat([_up(d1), e0], 1))
        return x + self.head(d0)[..., :h, :w]


def _up(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)

