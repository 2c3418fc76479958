"""Per-image seeded views of a batch for the image-only methods (degraded or photometrically jittered).

Each image's randomness is seeded by ``(seed, epoch, sample token, camera, view)``, so a view does not
depend on the batch composition: it is the same after a resume and with any number of processes. The
views are computed for the whole batch at once on the images' device; the per-image draws come from
per-image generators (:func:`image_generator`; on a GPU, each seeds one there), combined into batched
tensors. On the CPU a degraded image equals :func:`~collab_distill.data.degrade.degrade_image` on that
image alone with its generator; on a GPU the streams (not the distribution) differ.
"""
from __future__ import annotations

import zlib
from typing import Sequence

import torch
from torch import Tensor

from collab_distill.data.degrade import random_degradation


def image_generator(batch: dict, index: int, seed: int, view: str) -> torch.Generator:
    """A CPU generator for image ``index`` of ``batch`` and the named ``view``."""
    sample = int(batch["image_sample"][index])
    key = f"{seed}|{batch['epoch']}|{batch['tokens'][sample]}|{batch['cameras'][index]}|{view}"
    return torch.Generator().manual_seed(zlib.crc32(key.encode()))


def degraded_view(batch: dict, names: Sequence[str], severities: Sequence[int], seed: int, view: str) -> Tensor:
    """``(I, 3, H, W)``: each image degraded by a name and severity drawn from its own generator, the images
    that drew the same (name, severity) degraded together on their device."""
    generators = [image_generator(batch, i, seed, view) for i in range(len(batch["images"]))]
    return random_degradation(batch["images"], names, severities, generators).images


def jittered_view(batch: dict, strength: float, seed: int, view: str) -> Tensor:
    """``(I, 3, H, W)``: brightness, contrast and saturation each scaled by ``1 +- strength`` (no weather)."""
    images = batch["images"]
    factors = torch.stack([1 + strength * (2 * torch.rand(3, generator=image_generator(batch, i, seed, view)) - 1)
                           for i in range(len(images))]).to(images.device)
    out = images * factors[:, 0, None, None, None]
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * factors[:, 1, None, None, None] + mean
    grey = out.mean(dim=1, keepdim=True)
    out = (out - grey) * factors[:, 2, None, None, None] + grey
    return out.clamp(0, 1)
