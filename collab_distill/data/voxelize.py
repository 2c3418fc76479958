"""Voxelisation of offset-batched point clouds for spconv (vectorised torch, CPU or GPU).

Batch convention (Pointcept's): points of all samples are one ``(N, C)`` tensor, sample ``b`` being
rows ``offsets[b-1]:offsets[b]`` (``offsets`` are cumulative end indices, ``offsets[-1] == N``).

A point at ``xyz`` belongs to the cell ``floor(xyz / voxel_size)`` of a world-anchored grid. Each
sample's cells are shifted by its minimum cell, rounded down to a multiple of :data:`GRID_ALIGN`,
so indices are non-negative and strided convolutions group the same world cells whatever the
sample's extent. Voxels are sorted by ``(batch, z, y, x)``: the result does not depend on the
order of the points, up to float rounding of the means (which on CUDA, where the sums use atomic
adds, can also differ in the last bits from run to run; on CPU results are bit-reproducible).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

#: Per-sample grid shifts are multiples of this (>= the total stride of any point encoder here).
GRID_ALIGN = 16


@dataclass
class Voxels:
    """Voxelised batch.

    Attributes:
        coords: ``(V, 4)`` int32 ``(batch, z, y, x)`` voxel indices, as spconv expects.
        features: ``(V, C)`` mean of the features of the points in each voxel.
        inverse: ``(N,)`` int64 voxel index of every point.
        spatial_shape: ``(Z, Y, X)`` grid extent over the batch, rounded up to multiples of
            :data:`GRID_ALIGN` so that every stride-2 level keeps every voxel.
        batch_size: ``B``.
    """

    coords: Tensor
    features: Tensor
    inverse: Tensor
    spatial_shape: tuple[int, int, int]
    batch_size: int

    @classmethod
    def from_batch(cls, batch: dict[str, Any]) -> Voxels:
        """The voxels a collated batch carries (keys ``voxel_coords``, ``voxel_features``,
        ``voxel_inverse``, ``voxel_shape``, ``offsets``; see ``collab_distill.data.collate``)."""
        return cls(coords=batch["voxel_coords"], features=batch["voxel_features"], inverse=batch["voxel_inverse"],
                   spatial_shape=tuple(int(s) for s in batch["voxel_shape"]), batch_size=len(batch["offsets"]))


def offsets_to_batch(offsets: Tensor) -> Tensor:
    """``(N,)`` sample index of every point, from ``(B,)`` cumulative end ``offsets``."""
    counts = torch.diff(offsets, prepend=offsets.new_zeros(1))
    return torch.repeat_interleave(torch.arange(len(offsets), device=offsets.device), counts)


def voxelize(points: Tensor, offsets: Tensor, voxel_size: float) -> Voxels:
    """Group points into voxels of edge ``voxel_size`` metres and average their features.

    Args:
        points: ``(N, C)`` float, columns 0-2 are ``x, y, z`` in metres (C >= 3).
        offsets: ``(B,)`` int cumulative end index of each sample.
        voxel_size: voxel edge in metres.

    Returns:
        :class:`Voxels` with ``V`` unique occupied voxels.
    """
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f"points must be (N, C>=3), got {tuple(points.shape)}")
    if len(offsets) == 0 or int(offsets[-1]) != points.shape[0]:
        raise ValueError(f"offsets must end at N={points.shape[0]}, got {offsets.tolist()}")
    batch = offsets_to_batch(offsets.long())
    batch_size = len(offsets)
    cells = torch.floor(points[:, :3].double() / voxel_size).long()             # (N, 3) x, y, z
    big = torch.iinfo(torch.long).max
    sample_min = torch.full((batch_size, 3), big, dtype=torch.long, device=points.device)
    sample_min = sample_min.scatter_reduce(0, batch[:, None].expand(-1, 3), cells, reduce="amin")
    sample_min = torch.where(sample_min == big, 0, sample_min)                    # empty samples
    shift = torch.div(sample_min, GRID_ALIGN, rounding_mode="floor") * GRID_ALIGN
    zyx = (cells - shift[batch]).flip(1)                                           # (N, 3) z, y, x
    extent = zyx.max(0).values + 1 if len(zyx) else zyx.new_ones(3)
    shape = (torch.div(extent + GRID_ALIGN - 1, GRID_ALIGN, rounding_mode="floor") * GRID_ALIGN).tolist()

    key = ((batch * shape[0] + zyx[:, 0]) * shape[1] + zyx[:, 1]) * shape[2] + zyx[:, 2]
    unique_key, inverse = torch.unique(key, sorted=True, return_inverse=True)
    num_voxels = len(unique_key)
    x = unique_key % shape[2]
    y = unique_key // shape[2] % shape[1]
    z = unique_key // (shape[2] * shape[1]) % shape[0]
    b = unique_key // (shape[2] * shape[1] * shape[0])
    coords = torch.stack([b, z, y, x], dim=1).int()

    sums = points.new_zeros(num_voxels, points.shape[1]).index_add_(0, inverse, points)
    counts = torch.bincount(inverse, minlength=num_voxels).to(points.dtype)
    return Voxels(coords=coords, features=sums / counts[:, None], inverse=inverse,
                  spatial_shape=(int(shape[0]), int(shape[1]), int(shape[2])), batch_size=batch_size)
