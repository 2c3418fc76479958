"""Joint 2D/3D transforms that keep point-pixel pairs valid.

Image transforms (resize, crop, flip) edit the image and its ``K``; pairs are projected *after* them,
so they are right by construction (``geometry`` defines the pixel convention). 3D transforms
(rotation about z, flip, scale) act on the points *after* pairing: a pair refers to a point by index,
and the point keeps its index. Subsampling re-indexes the pairs.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from collab_distill.config import ImageAug, PointAug
from collab_distill.geometry import Pairs, crop_intrinsics, hflip_intrinsics, resize_intrinsics


def load_image(path: Path, out_size: tuple[int, int], K: np.ndarray, rng: np.random.Generator,
               aug: ImageAug = ImageAug(), dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, np.ndarray]:
    """Decode a JPEG, resize it to cover ``out_size``, crop to ``out_size``, maybe flip; update ``K``.

    Args:
        path: image file.
        out_size: ``(H, W)`` of the result.
        K: ``(3, 3)`` intrinsics of the file's image.
        rng: randomness for the augmentation.
        dtype: ``torch.float32`` (values in [0, 1]) or ``torch.uint8`` (the decoded 0..255, 4x smaller).

    Returns:
        image ``(3, H, W)`` of ``dtype``, and the matching ``(3, 3)`` float64 ``K``.
    """
    out_h, out_w = out_size
    with Image.open(path) as im:
        src_w, src_h = im.size
        scale = max(out_w / src_w, out_h / src_h) * rng.uniform(*aug.scale_range)
        new_w, new_h = max(out_w, round(src_w * scale)), max(out_h, round(src_h * scale))
        im.draft("RGB", (new_w, new_h))  # JPEG DCT-domain downscale by 1/2/4/8 (sizes rounded up)
        im = im.convert("RGB")
        factor = round(src_w / im.size[0])
        k = resize_intrinsics(K, 1.0 / factor, 1.0 / factor)
        sx, sy = new_w / im.size[0], new_h / im.size[1]
        im = im.resize((new_w, new_h), Image.BILINEAR, reducing_gap=None)
        k = resize_intrinsics(k, sx, sy)
    if aug.random_crop:
        left, top = int(rng.integers(0, new_w - out_w + 1)), int(rng.integers(0, new_h - out_h + 1))
    else:
        left, top = (new_w - out_w) // 2, (new_h - out_h) // 2
    image = torch.from_numpy(np.asarray(im)[top:top + out_h, left:left + out_w].copy()).permute(2, 0, 1)
    k = crop_intrinsics(k, left, top)
    if rng.random() < aug.hflip_prob:
        image = image.flip(-1)
        k = hflip_intrinsics(k, out_w)
    return (image if dtype == torch.uint8 else image.float().div_(255.0)), k


def augment_points(points: torch.Tensor, rng: np.random.Generator, aug: PointAug) -> torch.Tensor:
    """Rotate about z, mirror and scale the xyz columns of ``points (N, C)``; other columns are kept.

    Called after pairing, so pairs (which hold point indices) stay valid.
    """
    angle = math.radians(rng.uniform(-aug.rotate_deg, aug.rotate_deg)) if aug.rotate_deg else 0.0
    c, s = math.cos(angle), math.sin(angle)
    m = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=points.dtype)
    if rng.random() < aug.flip_prob:
        m = m @ torch.diag(torch.tensor([1.0, -1.0, 1.0], dtype=points.dtype))
    m = m * float(rng.uniform(*aug.scale_range))
    out = points.clone()
    out[:, :3] = points[:, :3] @ m.T
    return out


def subsample(num_points: int, max_points: int, rng: np.random.Generator) -> torch.Tensor | None:
    """Sorted indices of at most ``max_points`` of ``num_points`` points, or None to keep all."""
    if max_points <= 0 or num_points <= max_points:
        return None
    return torch.from_numpy(np.sort(rng.choice(num_points, max_points, replace=False)))


def reindex_pairs(pairs: Pairs, kept: torch.Tensor, num_points: int) -> Pairs:
    """Pairs after keeping only the points ``kept (N',)`` (indices into the ``num_points`` points)."""
    new_index = torch.full((num_points,), -1, dtype=torch.long)
    new_index[kept] = torch.arange(len(kept))
    mapped = new_index[pairs.point_idx]
    alive = mapped >= 0
    out = pairs.select(alive)
    out.point_idx = mapped[alive]
    return out
