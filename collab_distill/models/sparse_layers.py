"""spconv layer factory: one place that chooses the convolution algorithm for a device.

spconv's default algorithm (``MaskImplicitGemm``) only runs on CUDA tensors; on CPU every layer
must use ``ConvAlgo.Native`` (see ``docs/install.md``). With spconv 2.3 all
algorithms store weights in the same KRSC layout, so the algorithm is a plain attribute that
:func:`sync_algo` can switch when a model's inputs change device. Normalisation is ``BatchNorm1d``
on the voxel features, so ``nn.SyncBatchNorm.convert_sync_batchnorm`` converts it.
"""
from __future__ import annotations

import spconv.pytorch as sp
import torch
from spconv.pytorch.conv import SparseConvolution
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01


def spconv_algo(device: torch.device | str) -> sp.ConvAlgo:
    """``Native`` on CPU, ``MaskImplicitGemm`` (spconv's default, fastest) on CUDA."""
    return sp.ConvAlgo.Native if torch.device(device).type == "cpu" else sp.ConvAlgo.MaskImplicitGemm


def sync_algo(module: nn.Module, device: torch.device | str) -> None:
    """Set the algorithm of every spconv convolution inside ``module`` for ``device``."""
    algo = spconv_algo(device)
    for m in module.modules():
        if isinstance(m, SparseConvolution):
            m.algo = algo


def subm_conv(cin: int, cout: int, indice_key: str, device: torch.device | str = "cpu") -> sp.SubMConv3d:
    """3x3x3 submanifold convolution (output sites = input sites); layers sharing ``indice_key`` share rules."""
    return sp.SubMConv3d(cin, cout, 3, padding=1, bias=False, indice_key=indice_key, algo=spconv_algo(device))


def down_conv(cin: int, cout: int, indice_key: str, device: torch.device | str = "cpu") -> sp.SparseConv3d:
    """Stride-2, kernel-2 sparse convolution (halves the resolution)."""
    return sp.SparseConv3d(cin, cout, 2, stride=2, bias=False, indice_key=indice_key,
                           algo=spconv_algo(device))


def up_conv(cin: int, cout: int, indice_key: str, device: torch.device | str = "cpu") -> sp.SparseInverseConv3d:
    """Inverse of the :func:`down_conv` with the same ``indice_key``: back to its input sites."""
    return sp.SparseInverseConv3d(cin, cout, 2, bias=False, indice_key=indice_key, algo=spconv_algo(device))


def norm(channels: int) -> nn.BatchNorm1d:
    """BatchNorm over voxel features ``(V, C)``."""
    return nn.BatchNorm1d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class ResidualBlock(sp.SparseModule):
    """Two 3x3x3 submanifold convolutions with BN, ReLU and a residual (1x1 projection if widths differ).

    Input and output: a ``SparseConvTensor`` with features ``(V, cin)`` -> ``(V, cout)``, same sites.
    """

    def __init__(self, cin: int, cout: int, indice_key: str, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.branch = sp.SparseSequential(
            subm_conv(cin, cout, indice_key, device), norm(cout), nn.ReLU(inplace=True),
            subm_conv(cout, cout, indice_key, device), norm(cout))
        self.shortcut = (sp.SparseSequential(nn.Linear(cin, cout, bias=False), norm(cout))
                         if cin != cout else sp.SparseSequential(nn.Identity()))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: sp.SparseConvTensor) -> sp.SparseConvTensor:
        out = self.branch(x)
        return out.replace_feature(self.act(out.features + self.shortcut(x).features))


def stage(blocks: int, cin: int, cout: int, indice_key: str, device: torch.device | str = "cpu") -> sp.SparseSequential:
    """``blocks`` residual blocks, the first from ``cin`` to ``cout`` (an empty stage is the identity)."""
    widths = [cin] + [cout] * blocks
    return sp.SparseSequential(*[ResidualBlock(a, b, indice_key, device) for a, b in zip(widths, widths[1:])])
