"""Evaluation-only image corruptions: the unseen-corruption rows of the probes (docs/probes.md).

No training step uses these: none is a training degradation (:func:`~collab_distill.data.degrade.
available_image_degradations`, which ``method.degradations`` and the image-only baselines draw from)
nor a weather or night of the synthetic world (:data:`~collab_distill.data.conditions.CONDITION_TAGS`),
and the weather family of ImageNet-C (fog, frost, snow, spatter) is left out altogether.
``tests/test_corruptions.py`` checks the disjointness. They come from the ImageNet-C families
(Hendrycks & Dietterich, 2019) as the Cityscapes-C benchmark (Michaelis et al., 2019,
``imagecorruptions``) applies them to driving images; their severity tables are those of
``imagecorruptions``, and like it, the spatial ones are fractions of the image, not pixels:

    speckle_noise   noise        ``I + I * N(0, sigma^2)``                 (ImageNet-C's held-out noise)
    pixelate        digital      box down-sampling to a fraction of the size, nearest up-sampling
    zoom_blur       blur         the mean of the image zoomed about its centre by 1 .. a factor

Left out: ImageNet-C's ``saturate`` (the photometric jitter of ``methods/views.py`` scales saturation in
training), ``gaussian_blur`` (a twin of the training ``defocus_blur``), ``elastic_transform`` and
``glass_blur`` (they move pixels away from their sparse targets), and the weathers. Each of the three
has a training degradation of its family (Gaussian/shot noise, motion/defocus blur, JPEG): unseen
means another corruption model, not another family (as ImageNet-C's held-out corruptions).

Images are float ``(B, 3, H, W)`` in ``[0, 1]``, corrupted batched on their device with the
:class:`~collab_distill.data.degrade_image.Draws` of the training degradations (one generator per
image: an image's output does not depend on its batch). :class:`Corruption` is what a probe store
build applies: one name and severity, each view seeded from the run seed and the view's number, so
a store of corrupted views is the same for the same seed whatever the batching or the processes.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from collab_distill.data.degrade import ImageSeed, lookup, make_draws, make_generator
from collab_distill.data.degrade_image import Draws, ImageDegradation, Table

#: The severity the probes use when the config does not say (``eval.corruption_severity``).
DEFAULT_SEVERITY = 3

SPECKLE_NOISE: Table = {"sigma": (0.15, 0.2, 0.35, 0.45, 0.6)}
PIXELATE: Table = {"fraction": (0.6, 0.5, 0.4, 0.3, 0.25)}          # of each side kept before up-sampling
ZOOM_BLUR: Table = {"max_zoom": (1.10, 1.15, 1.20, 1.24, 1.30),      # the largest zoom of the mean
                    "zoom_step": (0.01, 0.01, 0.02, 0.02, 0.03)}     # zooms 1, 1 + step, ..., <= max_zoom


def _param(table: Table, name: str, severity: int) -> float:
    return table[name][severity - 1]


def speckle_noise(images: Tensor, severity: int, draws: Draws) -> Tensor:
    """Multiplicative Gaussian noise ``I + I * N(0, sigma^2)`` (ImageNet-C)."""
    return images + images * _param(SPECKLE_NOISE, "sigma", severity) * draws.randn(images.shape)


def pixelate(images: Tensor, severity: int, draws: Draws) -> Tensor:
    """Box down-sampling (area mean) to ``fraction`` of each side, then nearest up-sampling to the
    size: blocks of about ``1 / fraction`` pixels (ImageNet-C's PIL BOX round trip).
    Deterministic; ``draws`` is unused and accepted for the uniform signature."""
    fraction = _param(PIXELATE, "fraction", severity)
    height, width = images.shape[-2:]
    small = F.interpolate(images, size=(max(1, int(height * fraction)), max(1, int(width * fraction))), mode="area")
    return F.interpolate(small, size=(height, width), mode="nearest")


def _zoom(images: Tensor, factor: float) -> Tensor:
    """``images`` magnified by ``factor`` about the image centre (bilinear, borders clamped)."""
    theta = torch.tensor([[1.0 / factor, 0.0, 0.0], [0.0, 1.0 / factor, 0.0]], device=images.device)
    grid = F.affine_grid(theta.expand(len(images), 2, 3), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def zoom_blur(images: Tensor, severity: int, draws: Draws) -> Tensor:
    """The mean of the image and its zooms ``1 + step, 1 + 2 step, ... <= max_zoom`` about the centre
    (ImageNet-C's zoom blur: a camera moving toward the scene during the exposure).
    Deterministic; ``draws`` is unused and accepted for the uniform signature."""
    step = _param(ZOOM_BLUR, "zoom_step", severity)
    zooms = int(math.floor((_param(ZOOM_BLUR, "max_zoom", severity) - 1.0) / step + 1e-6))
    total = images.clone()
    for k in range(1, zooms + 1):
        total += _zoom(images, 1.0 + k * step)
    return total / (zooms + 1)


EVAL_CORRUPTIONS: dict[str, ImageDegradation] = {
    "speckle_noise": ImageDegradation(speckle_noise, SPECKLE_NOISE, "torch"),
    "pixelate": ImageDegradation(pixelate, PIXELATE, "torch (area down-sampling, nearest up-sampling)"),
    "zoom_blur": ImageDegradation(zoom_blur, ZOOM_BLUR, "torch (affine_grid + grid_sample per zoom)"),
}


def available_eval_corruptions() -> list[str]:
    """Names accepted by :func:`corrupt_images`, in registry order."""
    return list(EVAL_CORRUPTIONS)


def corrupt_images(images: Tensor, name: str, severity: int, generator: ImageSeed = None) -> Tensor:
    """Apply the evaluation corruption ``name`` at ``severity`` (1 mild .. 5 severe).

    Args:
        images: ``(B, 3, H, W)`` float in ``[0, 1]``.
        name: one of :func:`available_eval_corruptions`.
        severity: 1..5.
        generator: a seed, or one generator per image (as :func:`~collab_distill.data.degrade.degrade_image`).

    Returns:
        ``(B, 3, H, W)`` of the dtype and device of ``images``, in ``[0, 1]``.

    Raises:
        ValueError: an unknown name, a severity outside 1..5, or images of another shape or dtype.
    """
    spec = lookup(EVAL_CORRUPTIONS, "evaluation", name, severity)
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"images must be float (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    out = spec.apply(images.float(), int(severity), make_draws(generator, len(images), images.device))
    return out.clamp(0, 1).to(images.dtype)


def view_seed(seed: int, view: int) -> int:
    """The seed of view number ``view`` of a run seeded ``seed`` (numpy ``SeedSequence`` of both)."""
    return int(np.random.SeedSequence([int(seed), int(view)]).generate_state(1, np.uint64)[0]) >> 1


@dataclass(frozen=True)
class Corruption:
    """One evaluation corruption at one severity, seeded per view: what a probe store of corrupted views
    applies to each batch on the encoder's device, and part of that store's identity."""

    name: str
    severity: int
    seed: int

    def identity(self) -> dict[str, Any]:
        """``{"name", "severity", "seed"}``: what the corrupted views' store records."""
        return asdict(self)

    def __call__(self, images: Tensor, views: Sequence[int]) -> Tensor:
        """``images (B, 3, H, W)`` of the views numbered ``views (B)`` -> corrupted, each from its own
        generator (:func:`view_seed`), so a view's output does not depend on its batch."""
        generators = [make_generator(view_seed(self.seed, v), images.device) for v in views]
        return corrupt_images(images, self.name, self.severity, generators)
