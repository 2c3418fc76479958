"""Bilinear sampling of patch-token maps at float pixel coordinates (the one helper every method uses).

Pixel convention (see :mod:`collab_distill.geometry`): ``(u, v)`` = (column, row), integer values at
pixel centres. Patch ``(i, j)`` of a ViT with patch size ``p`` covers pixels ``j*p .. j*p + p - 1``,
so its centre is at ``u = j*p + (p - 1) / 2``, ``v = i*p + (p - 1) / 2``; in token units
``t = (u + 0.5) / p - 0.5``. This is exactly ``F.grid_sample(..., mode="bilinear",
padding_mode="border", align_corners=False)`` on the token map, but computed by gathering the four
neighbour tokens of each point, so that

* a point at a patch centre gets that token bit for bit (grid_sample's normalised coordinates lose
  a few ulps), and
* points from many images are sampled in one vectorised call without padding per image.
"""
from __future__ import annotations

import torch
from torch import Tensor


def sample_features(feature_map: Tensor, uv: Tensor, image_idx: Tensor, patch_size: float) -> Tensor:
    """Bilinearly sample token maps at pixel coordinates; outside the token centres, the border token.

    Args:
        feature_map: ``(B, D, h, w)`` patch-token maps (``h = H // patch_size``, ``w = W // patch_size``).
        uv: ``(P, 2)`` float pixel coordinates ``(u, v)`` in the image the map was computed from.
        image_idx: ``(P,)`` integer index into ``B`` of the image of each point.
        patch_size: image pixels per token: the ViT patch size (or the stride of any map that
            covers the image in a regular grid).

    Returns:
        ``(P, D)`` features, in ``feature_map``'s dtype; differentiable w.r.t. ``feature_map``.
    """
    if feature_map.ndim != 4 or uv.ndim != 2 or uv.shape[1] != 2 or image_idx.shape != uv.shape[:1]:
        raise ValueError(f"expected feature_map (B,D,h,w), uv (P,2), image_idx (P,); got "
                         f"{tuple(feature_map.shape)}, {tuple(uv.shape)}, {tuple(image_idx.shape)}")
    _, _, h, w = feature_map.shape
    # token coordinates, clamped to the centres of the border tokens (grid_sample's "border" padding)
    t = (uv.to(torch.float64) + 0.5) / patch_size - 0.5
    tx = t[:, 0].clamp(0, w - 1)
    ty = t[:, 1].clamp(0, h - 1)
    x0 = tx.floor().long().clamp(max=max(w - 2, 0))
    y0 = ty.floor().long().clamp(max=max(h - 2, 0))
    x1 = (x0 + 1).clamp(max=w - 1)
    y1 = (y0 + 1).clamp(max=h - 1)
    fx = (tx - x0).to(feature_map.dtype)[:, None]
    fy = (ty - y0).to(feature_map.dtype)[:, None]

    # one contiguous (B*h*w, D) table: each gathered row is then one contiguous read (gathering from the
    # channel-first map directly reads D values h*w apart, several times slower for wide maps)
    tokens = feature_map.permute(0, 2, 3, 1).reshape(-1, feature_map.shape[1])
    row0 = image_idx.long() * h + y0
    row1 = image_idx.long() * h + y1
    # lerp(a, b, 0) is a exactly, so a point at a token centre still gets that token bit for bit
    top = torch.lerp(tokens[row0 * w + x0], tokens[row0 * w + x1], fx)
    bottom = torch.lerp(tokens[row1 * w + x0], tokens[row1 * w + x1], fx)
    return torch.lerp(top, bottom, fy)
