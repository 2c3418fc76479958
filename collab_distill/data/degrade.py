"""Seeded image and LiDAR degradations by name and severity (1-5): the public entry points.

Images are float ``(B, 3, H, W)`` or ``(3, H, W)`` in ``[0, 1]``; point clouds are ``(N, C)`` float in
the sensor frame (``x, y, z, intensity[, ring, ...]``). The models and their severity tables live in
:mod:`~collab_distill.data.degrade_image` and :mod:`~collab_distill.data.degrade_lidar`; the
Markdown version is ``docs/degradations.md``.

Randomness comes only from ``generator``: an ``int`` seed, a ``torch.Generator`` (advanced by the
call), or ``None`` for a seed drawn from torch's global generator (so ``torch.manual_seed`` applies);
or, for images, a sequence of generators, one per image: each image's draws then come from its own
generator, so its output does not depend on the other images of the batch (it equals a call on that
image alone), while the batch is still degraded at once on its device. The same seed on the same
device gives identical output.

Example::

    foggy = degrade_image(images, "fog", severity=3, generator=0, depth=depth)
    noisy = random_degradation(images, ["night", "rain", "gaussian_noise"], generator=rng).images
    cloud, source = degrade_lidar(points, "fog", severity=2, generator=0)
"""
from __future__ import annotations

import numbers
from typing import NamedTuple, Sequence, TypeVar

import torch
from torch import Tensor

from collab_distill.data.degrade_image import IMAGE_DEGRADATIONS, Draws, ImageDegradation
from collab_distill.data.degrade_lidar import LIDAR_DEGRADATIONS, LidarDegradation, LidarDegraded

__all__ = ["CPU_CHUNK", "IMAGE_DEGRADATIONS", "LIDAR_DEGRADATIONS", "SEVERITIES", "ImageSeed", "LidarDegraded",
           "RandomDegraded", "Seed", "available_image_degradations", "available_lidar_degradations", "degrade_image",
           "degrade_lidar", "make_generator", "random_degradation"]

SEVERITIES = (1, 2, 3, 4, 5)
#: With one generator per image, the CPU degrades a group this many images at a time (the output is the
#: same): temporaries of a whole 96-image batch at 224x448 cost more in page faults than batching saves
#: (bench/degrade_batch.py). Other devices take each group at once.
CPU_CHUNK = 8
Seed = torch.Generator | int | None
#: A seed for the whole batch, or one generator per image.
ImageSeed = Seed | Sequence[torch.Generator]
_Spec = TypeVar("_Spec", ImageDegradation, LidarDegradation)


class RandomDegraded(NamedTuple):
    """Output of :func:`random_degradation`: ``images`` ``(B, 3, H, W)``, the ``names`` (``B``) and
    ``severities`` ``(B,)`` int64 applied to each image."""

    images: Tensor
    names: list[str]
    severities: Tensor


def available_image_degradations() -> list[str]:
    """Names accepted by :func:`degrade_image`."""
    return list(IMAGE_DEGRADATIONS)


def available_lidar_degradations() -> list[str]:
    """Names accepted by :func:`degrade_lidar`."""
    return list(LIDAR_DEGRADATIONS)


def make_generator(seed: Seed, device: torch.device | str) -> torch.Generator:
    """A generator on ``device``: seeded from an int, derived from ``None`` (torch's global generator)
    or from a generator on another device, or ``seed`` itself when it already lives on ``device``."""
    device = torch.device(device)
    if isinstance(seed, torch.Generator):
        if seed.device.type == device.type:
            return seed
        seed = int(torch.randint(2**62, (1,), generator=seed, device=seed.device))
    elif seed is None:
        seed = int(torch.randint(2**62, (1,)))
    return torch.Generator(device).manual_seed(int(seed))


def _per_image(generator: ImageSeed, batch: int) -> bool:
    """Whether ``generator`` is one generator per image (checked to be ``batch`` of them)."""
    if not isinstance(generator, (list, tuple)):
        return False
    if len(generator) != batch:
        raise ValueError(f"{len(generator)} generators for {batch} images: give one per image")
    return True


def make_draws(generator: ImageSeed, batch: int, device: torch.device) -> Draws:
    """The :class:`Draws` of ``batch`` images on ``device`` from a seed or one generator per image."""
    if _per_image(generator, batch):
        return Draws([make_generator(g, device) for g in generator], batch, device)
    return Draws([make_generator(generator, device)], batch, device)


def lookup(registry: dict[str, _Spec], kind: str, name: str, severity: int) -> _Spec:
    """The entry ``name`` of a degradation ``registry`` (``kind`` names it in errors), ``severity`` checked.

    Raises:
        ValueError: an unknown name or a severity outside :data:`SEVERITIES`.
    """
    if name not in registry:
        raise ValueError(f"unknown {kind} degradation {name!r}; valid: {', '.join(registry)}")
    if isinstance(severity, bool) or not isinstance(severity, numbers.Integral) or severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer in {SEVERITIES}, got {severity!r}")
    return registry[name]


def degrade_image(images: Tensor, name: str, severity: int, generator: ImageSeed = None,
                  depth: Tensor | None = None) -> Tensor:
    """Apply the image degradation ``name`` at ``severity``.

    Args:
        images: ``(B, 3, H, W)`` or ``(3, H, W)`` float in ``[0, 1]``.
        name: one of :func:`available_image_degradations`.
        severity: 1 (mild) .. 5 (severe).
        generator: seed, or one generator per image; see the module docstring.
        depth: optional ``(B, 1, H, W)`` (or ``(1, H, W)``) metric depth, used by depth-aware
            degradations (fog) and ignored by the others.

    Returns:
        Tensor of the shape, dtype and device of ``images``, in ``[0, 1]``.
    """
    spec = lookup(IMAGE_DEGRADATIONS, "image", name, severity)
    single = images.ndim == 3
    batch = images[None] if single else images
    if batch.ndim != 4 or batch.shape[1] != 3 or not batch.is_floating_point():
        raise ValueError(f"images must be float (B, 3, H, W) or (3, H, W), got {images.dtype} "
                         f"{tuple(images.shape)}")
    extra = {}
    if spec.depth_aware and depth is not None:
        depth = depth[None] if single else depth
        if depth.shape != (batch.shape[0], 1, *batch.shape[2:]):
            raise ValueError(f"depth must be (B, 1, H, W) = {(batch.shape[0], 1, *batch.shape[2:])}, "
                             f"got {tuple(depth.shape)}")
        extra["depth"] = depth
    out = spec.apply(batch.float(), int(severity), make_draws(generator, len(batch), batch.device), **extra)
    out = out.clamp(0, 1).to(images.dtype)
    return out[0] if single else out


def random_degradation(images: Tensor, names: Sequence[str] | None = None,
                       severities: Sequence[int] = SEVERITIES, generator: ImageSeed = None,
                       depth: Tensor | None = None) -> RandomDegraded:
    """Degrade each image with a name and severity drawn uniformly from ``names`` (default: all) and
    ``severities``, e.g. for the image-only baselines (a distorted student view, or two
    independently degraded views with two calls). The images that drew the same (name, severity)
    are degraded together, at once on their device.

    Args:
        images: ``(B, 3, H, W)`` float in ``[0, 1]``.
        names: candidate degradations; default :func:`available_image_degradations`.
        severities: candidate severities.
        generator: seed, see the module docstring; with one generator per image, each image draws its
            name, then its severity, then the degradation's values from its own generator (on the
            generator's device; a generator on another device than the images seeds one there for
            the values), so an image's output does not depend on the batch it is in.
        depth: optional ``(B, 1, H, W)`` metric depth for depth-aware degradations.
    """
    names = list(names) if names is not None else available_image_degradations()
    if not names or not severities:
        raise ValueError("random_degradation needs at least one name and one severity")
    for name in names:                       # fail before drawing anything
        for severity in severities:
            lookup(IMAGE_DEGRADATIONS, "image", name, severity)
    b = images.shape[0]
    per_image = _per_image(generator, b)
    if per_image:
        picks = torch.tensor([[int(torch.randint(len(choices), (1,), generator=g, device=g.device))
                               for choices in (names, severities)] for g in generator]).view(b, 2)
        name_index, severity_index = picks[:, 0], picks[:, 1]
    else:
        generator = make_generator(generator, images.device)
        name_index = torch.randint(len(names), (b,), generator=generator, device=images.device).cpu()
        severity_index = torch.randint(len(severities), (b,), generator=generator, device=images.device).cpu()
    severity = torch.tensor(list(severities))[severity_index]
    out = torch.empty_like(images)                         # every row is written below
    chunk = CPU_CHUNK if per_image and images.device.type == "cpu" else b
    for n, s in torch.unique(torch.stack([name_index, severity], 1), dim=0).tolist():
        for rows in torch.nonzero((name_index == n) & (severity == s)).squeeze(1).split(chunk):
            group = [generator[r] for r in rows.tolist()] if per_image else generator
            rows = rows.to(images.device)
            out[rows] = degrade_image(images[rows], names[n], s, group, None if depth is None else depth[rows])
    return RandomDegraded(out, [names[i] for i in name_index.tolist()], severity)


def degrade_lidar(points: Tensor, name: str, severity: int, generator: Seed = None) -> LidarDegraded:
    """Apply the LiDAR degradation ``name`` at ``severity``.

    Args:
        points: ``(N, C)`` float, ``C >= 4``: ``x, y, z`` (metres, sensor frame), intensity, then
            optionally the ring index and any further columns (carried along).
        name: one of :func:`available_lidar_degradations`.
        severity: 1 (mild) .. 5 (severe).
        generator: seed, see the module docstring.

    Returns:
        :class:`LidarDegraded` ``(points (N', C), source (N',) int64)``: surviving points first in
        their original order, then spurious ones; ``source`` is each output row's original row, or
        ``-1`` for a spurious point. Re-index pairs and labels with it.
    """
    spec = lookup(LIDAR_DEGRADATIONS, "LiDAR", name, severity)
    if points.ndim != 2 or points.shape[1] < 4 or not points.is_floating_point():
        raise ValueError(f"points must be float (N, C>=4) [x, y, z, intensity, ...], got {points.dtype} "
                         f"{tuple(points.shape)}")
    return spec.apply(points, int(severity), make_generator(generator, points.device))
