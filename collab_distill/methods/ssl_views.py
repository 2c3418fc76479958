"""The self-supervised teacher's views of a batch: random resized crops (with a horizontal flip) and iBOT
patch masks, made for the whole batch at once on the images' device.

Each image's draws come from its own generator (:func:`~collab_distill.methods.views.image_generator`, seeded
by ``(seed, epoch, sample token, camera, view)``), so a view does not depend on the batch composition: it is
the same after a resume and with any number of processes. The crops are one ``affine_grid`` +
``grid_sample`` over the batch; a masked patch is filled with the encoder's mean colour, so after the
encoder's normalisation its input is 0 and its token is the patch embedding's bias (a mask token).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from collab_distill.methods.views import image_generator

ASPECT = (3 / 4, 4 / 3)  # crop aspect ratio (relative to the image's), log-uniform, as torchvision's crop


def crop_boxes(batch: dict, scale: tuple[float, float], seed: int, view: str) -> Tensor:
    """``(I, 5)`` per image: crop width and height as fractions of the image's, centre ``(x, y)`` in
    ``[-1, 1]`` image coordinates (``grid_sample``'s), and the flip sign (+1 or -1).

    The area fraction is uniform in ``scale`` and the aspect ratio log-uniform in :data:`ASPECT`; the box
    lies inside the image."""
    rows = []
    for i in range(len(batch["images"])):
        u = torch.rand(5, generator=image_generator(batch, i, seed, view), dtype=torch.float64)
        area = scale[0] + (scale[1] - scale[0]) * float(u[0])
        ratio = math.exp(math.log(ASPECT[0]) + (math.log(ASPECT[1]) - math.log(ASPECT[0])) * float(u[1]))
        width, height = min(1.0, math.sqrt(area * ratio)), min(1.0, math.sqrt(area / ratio))
        rows.append([width, height, (1 - width) * (2 * float(u[2]) - 1), (1 - height) * (2 * float(u[3]) - 1),
                     -1.0 if float(u[4]) < 0.5 else 1.0])
    return torch.tensor(rows, dtype=torch.float32)


def random_resized_crops(batch: dict, images: Tensor, scale: tuple[float, float], seed: int, view: str) -> Tensor:
    """``(I, 3, H, W)``: each of ``images`` ``(I, 3, H, W)`` cropped by its :func:`crop_boxes` box, flipped
    horizontally when drawn, and resized back to ``(H, W)`` (bilinear)."""
    box = crop_boxes(batch, scale, seed, view).to(images.device)
    theta = torch.zeros(len(images), 2, 3, device=images.device)
    theta[:, 0, 0] = box[:, 0] * box[:, 4]
    theta[:, 0, 2] = box[:, 2]
    theta[:, 1, 1] = box[:, 1]
    theta[:, 1, 2] = box[:, 3]
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def patch_masks(batch: dict, grid: tuple[int, int], prob: float, ratio: tuple[float, float], seed: int,
                view: str) -> Tensor:
    """``(I, h, w)`` bool, True at masked patches: with probability ``prob`` an image gets a mask of
    ``round(ratio * h * w)`` random patches (``ratio`` uniform in ``ratio``), otherwise none."""
    h, w = grid
    masks = torch.zeros(len(batch["images"]), h * w, dtype=torch.bool)
    for i in range(len(masks)):
        gen = image_generator(batch, i, seed, view)
        draw = torch.rand(2, generator=gen, dtype=torch.float64)
        order = torch.randperm(h * w, generator=gen)
        if float(draw[0]) < prob:
            masks[i, order[:round((ratio[0] + (ratio[1] - ratio[0]) * float(draw[1])) * h * w)]] = True
    return masks.view(-1, h, w)


def apply_masks(images: Tensor, masks: Tensor, patch: int, fill: Tensor) -> Tensor:
    """``(I, 3, H, W)``: ``images`` with the pixels of every masked patch (``masks (I, h, w)``, patches of
    ``patch`` pixels) set to ``fill`` ``(1, 3, 1, 1)``."""
    pixels = masks.to(images.device).repeat_interleave(patch, 1).repeat_interleave(patch, 2)[:, None]
    return torch.where(pixels, fill.to(images.dtype), images)
