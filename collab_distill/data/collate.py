"""Collate keyframes into one batch with offset batching (no padding) and voxelise the points.

Batch keys (``B`` samples, ``I`` images in total, ``N`` points, ``P`` pairs, ``V`` voxels); items
without points (``PairedDataset(..., with_points=False)``, the image-only methods) make a batch
without the point, pair, label and voxel keys:

=================  ===============  ==============================================================
key                shape            meaning
=================  ===============  ==============================================================
points             (N, 5)           x, y, z, intensity, sweep time lag (s) of all samples, concatenated
                                    (each sample's keyframe rows first, then ``data.nsweeps - 1`` sweeps)
offsets            (B,)             cumulative end index of each sample's points
labels             (N,) or absent   lidarseg class index per point, ``IGNORE`` on sweep rows (absent unless
                                    every sample has it)
images             (I, 3, H, W)     all selected camera images, float in [0, 1] or uint8 (``data.image_dtype``;
                                    the trainer makes them float on the device); absent in store mode
teacher_maps       (I, D, h, w)     float16 stored teacher patch maps (store mode only, instead of images)
image_sample       (I,)             the sample each image belongs to
K, lidar2cam       (I, 3, 3), (I, 4, 4)
conditions         (I, 5) bool      condition tags per image (``CONDITION_TAGS`` columns)
pair_point         (P,)             index into ``points``
pair_image         (P,)             index into ``images``
pair_uv            (P, 2)           float pixel (u = column, v = row) in the image
pair_depth         (P,)             metres
voxel_coords       (V, 4) int32     (batch, z, y, x) for spconv
voxel_features     (V, 5)           mean of the points in the voxel
voxel_inverse      (N,)             voxel of each point
voxel_shape        (3,)             spconv spatial shape (Z, Y, X)
tokens, cameras    lists            sample tokens; camera channel of each image
epoch              int              the epoch the batch belongs to (seeds per-image randomness)
=================  ===============  ==============================================================
"""
from __future__ import annotations

from typing import Any

import torch

from collab_distill.data.voxelize import voxelize


class Collate:
    """``collate_fn`` for :class:`~collab_distill.data.dataset.PairedDataset` items."""

    def __init__(self, voxel_size: float) -> None:
        self.voxel_size = voxel_size

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        image_base = torch.tensor([0] + [len(it["cameras"]) for it in items]).cumsum(0)
        views = "images" if "images" in items[0] else "teacher_maps"   # teacher_maps: PairedDataset's store mode
        batch: dict[str, Any] = {
            views: torch.cat([it[views] for it in items]),
            "image_sample": torch.repeat_interleave(torch.arange(len(items)), torch.diff(image_base)),
            "K": torch.cat([it["K"] for it in items]),
            "lidar2cam": torch.cat([it["lidar2cam"] for it in items]),
            "conditions": torch.cat([it["conditions"].expand(len(it["cameras"]), -1) for it in items]),
            "tokens": [it["token"] for it in items],
            "cameras": [c for it in items for c in it["cameras"]],
            "epoch": items[0]["epoch"],
        }
        if "points" in items[0]:
            batch.update(self._points(items, image_base))
        return batch

    def _points(self, items: list[dict[str, Any]], image_base: torch.Tensor) -> dict[str, Any]:
        """The point, pair, label and voxel keys of ``items`` (``image_base``: each item's first image)."""
        point_base = torch.tensor([0] + [len(it["points"]) for it in items]).cumsum(0)
        out: dict[str, Any] = {
            "points": torch.cat([it["points"] for it in items]),
            "offsets": point_base[1:].clone(),
            "pair_point": torch.cat([it["pair_point"] + point_base[i] for i, it in enumerate(items)]),
            "pair_image": torch.cat([it["pair_image"] + image_base[i] for i, it in enumerate(items)]),
            "pair_uv": torch.cat([it["pair_uv"] for it in items]),
            "pair_depth": torch.cat([it["pair_depth"] for it in items]),
        }
        if all(it["labels"] is not None for it in items):
            out["labels"] = torch.cat([it["labels"] for it in items])
        vox = voxelize(out["points"], out["offsets"], self.voxel_size)
        out.update(voxel_coords=vox.coords, voxel_features=vox.features, voxel_inverse=vox.inverse,
                   voxel_shape=torch.tensor(vox.spatial_shape))
        return out
