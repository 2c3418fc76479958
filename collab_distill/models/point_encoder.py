"""The LiDAR encoder: a spconv sparse UNet on voxels, read back per point through the inverse map.

Architecture (SpUNet/MinkUNet style): a 3x3x3 submanifold stem; per encoder stage a stride-2
sparse convolution then residual blocks; per decoder stage an inverse convolution back to the
sites of the matching encoder level, concatenation with that level's features (skip) and residual
blocks. Each convolution is followed by ``BatchNorm1d`` and ReLU.

Input is the voxelisation of :mod:`collab_distill.data.voxelize` (done by the collate function, with
``data.voxel_size``): ``encoder(Voxels.from_batch(batch))`` or ``encoder(voxelize(points, offsets, size))``.
"""
from __future__ import annotations

import logging

import spconv.pytorch as sp
import torch
from torch import Tensor, nn

from ..data.voxelize import GRID_ALIGN, Voxels
from .config import PointEncoderConfig
from .frozen import FreezableModule
from .sparse_layers import down_conv, norm, stage, subm_conv, sync_algo, up_conv

# spconv's SparseConvTensor is a torch.fx ``ProxyableClassMeta`` class, so building one calls
# ``torch.fx.is_fx_tracing()``, which logs (once, through logging, not ``warnings``) a deprecation notice
# addressed to spconv's authors, in the middle of the first training progress bar. Drop exactly that
# record; every other torch.fx message still shows.
logging.getLogger("torch.fx._symbolic_trace").addFilter(
    lambda record: not record.getMessage().startswith("is_fx_tracing will return true"))


class PointEncoder(FreezableModule):
    """Per-point features from voxelised, offset-batched points.

    Args:
        cfg: widths, depths, input channels.
        device: where the layers are built; the spconv algorithm follows the input's device at
            every call anyway (Native on CPU, implicit GEMM on CUDA).

    Raises:
        ValueError: inconsistent widths/depths, or more down-sampling stages than the grid alignment allows.
    """

    def __init__(self, cfg: PointEncoderConfig, device: torch.device | str = "cpu") -> None:
        super().__init__()
        stages = len(cfg.enc_widths)
        if not (len(cfg.enc_depths) == len(cfg.dec_widths) == len(cfg.dec_depths) == stages):
            raise ValueError("point encoder: enc_widths, enc_depths, dec_widths and dec_depths must have the "
                             f"same length, got {cfg.enc_widths}, {cfg.enc_depths}, {cfg.dec_widths}, {cfg.dec_depths}")
        if 2 ** stages > GRID_ALIGN:
            raise ValueError(f"point encoder: at most {GRID_ALIGN.bit_length() - 1} stages, got {stages}")
        if min(cfg.dec_depths, default=1) < 1 or min(cfg.enc_depths, default=0) < 0:
            raise ValueError("point encoder: dec_depths must be >= 1 (they fuse the skip) and enc_depths >= 0")
        self.cfg = cfg
        self.stem = sp.SparseSequential(subm_conv(cfg.in_channels, cfg.stem_width, "subm0", device),
                                        norm(cfg.stem_width), nn.ReLU(inplace=True))
        level_widths = [cfg.stem_width, *cfg.enc_widths]          # width at resolution level 0..S
        self.down = nn.ModuleList()
        self.enc = nn.ModuleList()
        for s in range(stages):
            self.down.append(sp.SparseSequential(down_conv(level_widths[s], cfg.enc_widths[s], f"down{s + 1}", device),
                                                 norm(cfg.enc_widths[s]), nn.ReLU(inplace=True)))
            self.enc.append(stage(cfg.enc_depths[s], cfg.enc_widths[s], cfg.enc_widths[s], f"subm{s + 1}", device))
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        width = level_widths[-1]
        for s in range(stages):
            level = stages - 1 - s                                   # resolution level after this up-sampling
            out = cfg.dec_widths[s]
            self.up.append(sp.SparseSequential(up_conv(width, out, f"down{level + 1}", device),
                                               norm(out), nn.ReLU(inplace=True)))
            self.dec.append(stage(cfg.dec_depths[s], out + level_widths[level], out, f"subm{level}", device))
            width = out
        self.to(device)

    @property
    def out_channels(self) -> int:
        return self.cfg.dec_widths[-1] if self.cfg.dec_widths else self.cfg.stem_width

    def forward(self, voxels: Voxels, point_index: Tensor | None = None) -> Tensor:
        """Encode a voxelised batch.

        Args:
            voxels: ``coords (V, 4)``, ``features (V, cfg.in_channels)``, ``inverse (N,)``, grid shape, ``B``.
            point_index: optional ``(P,)`` indices of the points wanted. Reading only those (e.g. the
                paired points) avoids materialising, and back-propagating through, all ``N`` rows.

        Returns:
            ``(N, out_channels)`` features, each point getting those of its voxel; ``(P, out_channels)``
            for ``point_index``, the same rows as ``forward(voxels)[point_index]``.
        """
        if voxels.features.shape[1] != self.cfg.in_channels:
            raise ValueError(f"point encoder expects {self.cfg.in_channels} input channels, "
                             f"got {voxels.features.shape[1]}")
        sync_algo(self, voxels.features.device)
        x = sp.SparseConvTensor(voxels.features, voxels.coords, list(voxels.spatial_shape), voxels.batch_size)
        x = self.stem(x)
        skips = [x]
        for down, blocks in zip(self.down, self.enc):
            x = blocks(down(x))
            skips.append(x)
        skips.pop()                                                   # the deepest level is x itself
        for up, blocks in zip(self.up, self.dec):
            x = up(x)
            x = blocks(x.replace_feature(torch.cat([x.features, skips.pop().features], dim=1)))
        return x.features[voxels.inverse if point_index is None else voxels.inverse[point_index]]
