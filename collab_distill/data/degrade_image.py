"""Image degradations: weather, low light, sensor noise, blur and compression, at severities 1-5.

Every function takes float images ``(B, 3, H, W)`` in ``[0, 1]``, an integer ``severity`` in 1..5 and
a ``torch.Generator`` on the images' device (the only source of randomness), and returns a new
``(B, 3, H, W)`` float32 tensor in ``[0, 1]``. Validation, seeding and dtype handling live in
:mod:`collab_distill.data.degrade`; call :func:`collab_distill.data.degrade.degrade_image`.

Each degradation reads its parameters from a table: one tuple of five values (severity 1..5) per
parameter. Spatial parameters (``*_px``) are pixels on an image whose short side is
:data:`REFERENCE_SIDE` (ImageNet-C's 224) and are scaled with the image, so a severity means the same
blur or streak at any resolution. Noise, blur, JPEG, brightness and contrast follow ImageNet-C
(Hendrycks & Dietterich, 2019); fog, rain, snow and night are small physical models written here in
torch, with kornia for filtering and the plasma fractal.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable

import cv2
import kornia
import numpy as np
import torch
from torch import Tensor

#: Short image side (pixels) at which the ``*_px`` table entries hold.
REFERENCE_SIDE = 224

Table = dict[str, tuple[float, ...]]


@dataclass(frozen=True)
class ImageDegradation:
    """A registered image degradation.

    Attributes:
        apply: ``apply(images (B,3,H,W), severity, generator, **extra) -> (B,3,H,W)``.
        table: parameter name -> five values, one per severity.
        implemented_by: the library doing the work, for the docs and the benchmark.
        depth_aware: whether ``apply`` takes a ``depth`` map ``(B,1,H,W)`` in metres.
    """

    apply: Callable[..., Tensor]
    table: Table
    implemented_by: str
    depth_aware: bool = False


def _param(table: Table, name: str, severity: int) -> float:
    return table[name][severity - 1]


def _pixels(images: Tensor, length_px: float) -> float:
    """``length_px`` (defined at :data:`REFERENCE_SIDE`) scaled to the short side of ``images``."""
    return length_px * min(images.shape[-2:]) / REFERENCE_SIDE


def _disk(radius: float, device: torch.device) -> Tensor:
    """``(k, k)`` anti-aliased disk of ``radius`` pixels (1 inside, 0 outside, linear over one pixel)."""
    reach = math.ceil(radius)
    offsets = torch.arange(-reach, reach + 1, device=device, dtype=torch.float32)
    return (radius + 0.5 - torch.hypot(offsets[:, None], offsets[None, :])).clamp(0, 1)


def _line_kernels(length: float, angle_deg: Tensor) -> Tensor:
    """``(B, k, k)`` normalised kernels of a straight path of ``length`` pixels at ``angle_deg``
    ``(B,)`` (0 = horizontal, 90 = vertical), centred, splatted bilinearly from 4 samples per pixel
    so that the blur grows continuously with ``length`` (kornia's motion kernels have odd integer
    lengths, which collapse neighbouring severities on small images)."""
    reach = math.ceil(length / 2) + 1
    size = 2 * reach + 1
    steps = torch.linspace(-length / 2, length / 2, max(2, math.ceil(4 * length)), device=angle_deg.device)
    angle = torch.deg2rad(angle_deg)[:, None]
    x = reach + steps * torch.cos(angle)                                     # (B, S)
    y = reach - steps * torch.sin(angle)
    x0, y0 = x.floor(), y.floor()
    kernels = torch.zeros(len(angle_deg), size * size, device=angle_deg.device)
    for dx in (0, 1):
        for dy in (0, 1):
            weight = (1 - (x - x0 - dx).abs()) * (1 - (y - y0 - dy).abs())
            kernels.scatter_add_(1, ((y0 + dy) * size + x0 + dx).long(), weight)
    kernels = kernels.view(-1, size, size)
    return kernels / kernels.sum(dim=(1, 2), keepdim=True)


def _filter(images: Tensor, kernels: Tensor) -> Tensor:
    """Correlate ``images`` ``(B, C, H, W)`` with ``kernels`` ``(k, k)`` (shared) or ``(B, k, k)``
    (kornia ``filter2d``, reflected borders). A shared kernel is expanded per sample: kornia then
    runs one grouped convolution, 3x faster on the CPU than its shared-kernel path."""
    return kornia.filters.filter2d(images, kernels.expand(images.shape[0], *kernels.shape[-2:]))


def _uniform(generator: torch.Generator, shape: tuple[int, ...], like: Tensor) -> Tensor:
    return torch.rand(shape, generator=generator, device=like.device, dtype=torch.float32)


# ----------------------------------------------------------------------------------------- fog
FOG: Table = {
    # Meteorological optical range V; extinction beta = ln(20) / V (Koschmieder). Used with depth.
    "visibility_m": (400.0, 200.0, 100.0, 60.0, 35.0),
    # Without depth: mean optical depth beta * d over the image, modulated by a plasma fractal.
    "optical_depth": (0.35, 0.7, 1.1, 1.6, 2.3),
    # Airlight A (grey level of the fog at infinite distance).
    "airlight": (0.75, 0.78, 0.8, 0.82, 0.85),
}
#: The plasma fractal is drawn at 1/PLASMA_STRIDE of the image size and upsampled bilinearly.
PLASMA_STRIDE = 4


def fog(images: Tensor, severity: int, generator: torch.Generator, depth: Tensor | None = None) -> Tensor:
    """Koschmieder's law ``I = J t + A (1 - t)``, ``t = exp(-beta d)``.

    With ``depth`` ``(B, 1, H, W)`` in metres, ``beta = ln(20) / visibility`` and pixels whose depth
    is not finite or not positive (sky, no return) count as infinitely far (``t = 0``). Without
    depth, the optical depth ``beta d`` is ``optical_depth * (0.5 + plasma)`` with a kornia
    diamond-square plasma fractal in ``[0, 1]`` (drawn at 1/:data:`PLASMA_STRIDE` resolution):
    patchy fog, homogeneous on average.
    """
    airlight = _param(FOG, "airlight", severity)
    if depth is not None:
        beta = math.log(20.0) / _param(FOG, "visibility_m", severity)
        far = ~torch.isfinite(depth) | (depth <= 0)
        optical_depth = torch.where(far, torch.inf, beta * depth.float())
    else:
        b, _, h, w = images.shape
        coarse = (math.ceil(h / PLASMA_STRIDE), math.ceil(w / PLASMA_STRIDE))   # fog is smooth: save 16x
        plasma = kornia.contrib.diamond_square((b, 1, *coarse), roughness=0.6,
                                               random_fn=partial(torch.rand, generator=generator),
                                               device=images.device, dtype=torch.float32)
        plasma = torch.nn.functional.interpolate(plasma, size=(h, w), mode="bilinear", align_corners=False)
        optical_depth = _param(FOG, "optical_depth", severity) * (0.5 + plasma)
    t = torch.exp(-optical_depth)
    return images * t + airlight * (1 - t)


# ---------------------------------------------------------------------------- rain and snow
RAIN: Table = {
    "density": (0.004, 0.008, 0.012, 0.018, 0.026),    # particles per pixel (at the reference size)
    "size_px": (1.0, 1.0, 1.0, 1.0, 1.0),                # particle diameter
    "streak_px": (11.0, 15.0, 19.0, 25.0, 31.0),         # path length during the exposure
    "opacity": (0.35, 0.4, 0.45, 0.5, 0.55),
    "brightness": (0.85, 0.85, 0.85, 0.85, 0.85),        # grey level of a streak
    "veil": (0.06, 0.12, 0.18, 0.24, 0.32),              # haze toward veil_level
    "veil_level": (0.5, 0.5, 0.5, 0.5, 0.5),
}
SNOW: Table = {
    "density": (0.003, 0.005, 0.007, 0.01, 0.014),
    "size_px": (2.0, 2.5, 3.0, 3.5, 4.0),
    "streak_px": (2.0, 3.0, 4.0, 5.0, 6.0),
    "opacity": (0.6, 0.65, 0.7, 0.75, 0.8),
    "brightness": (1.0, 1.0, 1.0, 1.0, 1.0),
    "veil": (0.05, 0.1, 0.15, 0.2, 0.25),
    "veil_level": (0.85, 0.85, 0.85, 0.85, 0.85),
}


def _precipitation(images: Tensor, severity: int, generator: torch.Generator, table: Table) -> Tensor:
    """Falling particles over a veil.

    Round blobs of ``size_px`` sit at random pixels (``density`` per pixel of the reference image,
    rescaled so that the covered share does not depend on the resolution) and are smeared into
    streaks of ``streak_px`` at a per-image wind angle within 20 deg of vertical (kornia
    ``filter2d``). The streaks (``opacity``, grey level ``brightness``) are laid over the veiled
    image ``(1 - veil) I + veil * veil_level``.
    """
    b, _, h, w = images.shape
    p = {k: _param(table, k, severity) for k in table}
    scale = _pixels(images, 1.0)
    size, streak = max(p["size_px"] * scale, 1.0), max(p["streak_px"] * scale, 1.0)
    # Keep the covered share (centres per pixel x footprint) of the reference image, also where a
    # particle cannot shrink below one pixel.
    density = p["density"] * p["size_px"] * p["streak_px"] / (size * streak)
    centres = (_uniform(generator, (b, 1, h, w), images) < density).float()
    disk = _disk(size / 2, images.device)
    particles = _filter(centres, disk / disk.max()).clamp(0, 1)
    angle = 90.0 + 40.0 * (_uniform(generator, (b,), images) - 0.5)
    layer = _filter(particles, _line_kernels(streak, angle))
    layer = (layer * streak).clamp(0, 1) * p["opacity"]                      # streak pixels = opacity
    veiled = images * (1 - p["veil"]) + p["veil"] * p["veil_level"]
    return veiled * (1 - layer) + layer * p["brightness"]


def rain(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Thin, long, faint grey streaks over a grey haze (table :data:`RAIN`)."""
    return _precipitation(images, severity, generator, RAIN)


def snow(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Larger, short, nearly opaque white flakes over a bright veil (table :data:`SNOW`)."""
    return _precipitation(images, severity, generator, SNOW)


# -------------------------------------------------------------------------------------- night
NIGHT: Table = {
    "illumination": (0.3, 0.12, 0.05, 0.02, 0.008),     # scene light relative to daylight
    "photons": (2000.0, 2000.0, 2000.0, 2000.0, 2000.0),  # photo-electrons for white at daylight
    "read_noise_e": (2.0, 2.5, 3.0, 3.5, 4.0),           # Gaussian read noise, electrons
    "tint": (0.15, 0.25, 0.35, 0.45, 0.55),              # mix toward the lamp colour
}
#: Lamp colours (linear RGB, max 1): sodium-vapour orange and cold LED/moonlight blue.
LAMPS = torch.tensor([[1.0, 0.55, 0.2], [0.45, 0.6, 1.0]])


def night(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Low light in linear RGB (sRGB approximated by gamma 2.2).

    The scene is tinted toward a lamp colour (one of :data:`LAMPS` per image), lit at
    ``illumination`` x daylight, and sensed as Poisson(``photons * illumination * L``) electrons plus
    Gaussian read noise. Auto exposure applies a gain of ``illumination ** -0.5``, recovering half of
    the lost light in log terms, so the result is both darker and noisier.
    """
    b = images.shape[0]
    p = {k: _param(NIGHT, k, severity) for k in NIGHT}
    lamp = LAMPS.to(images.device)[torch.randint(len(LAMPS), (b,), generator=generator, device=images.device)]
    tint = (1 - p["tint"]) + p["tint"] * lamp                                  # (B, 3)
    linear = images.clamp(0, 1) ** 2.2 * tint[:, :, None, None]
    electrons_full = p["photons"] * p["illumination"]
    electrons = torch.poisson(linear * electrons_full, generator=generator)
    electrons = electrons + p["read_noise_e"] * torch.randn(electrons.shape, generator=generator,
                                                             device=images.device)
    linear = electrons / electrons_full * p["illumination"] ** 0.5
    return linear.clamp(0, 1) ** (1 / 2.2)


# ------------------------------------------------------------------------------------- noise
GAUSSIAN_NOISE: Table = {"sigma": (0.08, 0.12, 0.18, 0.26, 0.38)}
SHOT_NOISE: Table = {"photons": (60.0, 25.0, 12.0, 5.0, 3.0)}          # photons at value 1
IMPULSE_NOISE: Table = {"amount": (0.03, 0.06, 0.09, 0.17, 0.27)}      # share of values set to 0 or 1


def gaussian_noise(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Additive white noise ``I + N(0, sigma^2)`` (ImageNet-C)."""
    sigma = _param(GAUSSIAN_NOISE, "sigma", severity)
    return images + sigma * torch.randn(images.shape, generator=generator, device=images.device)


def shot_noise(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Photon noise ``Poisson(I * n) / n`` (ImageNet-C)."""
    photons = _param(SHOT_NOISE, "photons", severity)
    return torch.poisson(images.clamp(0, 1) * photons, generator=generator) / photons


def impulse_noise(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Salt and pepper: each channel value is replaced with 0 or 1 with probability ``amount``."""
    amount = _param(IMPULSE_NOISE, "amount", severity)
    u = _uniform(generator, tuple(images.shape), images)
    salt_or_pepper = (u < amount / 2).float()                                  # u < amount: replaced
    return torch.where(u < amount, salt_or_pepper, images)


# -------------------------------------------------------------------------------------- blur
MOTION_BLUR: Table = {"length_px": (7.0, 11.0, 15.0, 21.0, 29.0)}      # straight motion path
DEFOCUS_BLUR: Table = {"radius_px": (2.0, 3.0, 4.5, 6.0, 8.0)}          # circle of confusion


def motion_blur(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Linear motion blur of ``length_px`` at a per-image angle in [-45, 45] deg (ImageNet-C's range),
    applied with kornia ``filter2d``."""
    angle = 90.0 * (_uniform(generator, (images.shape[0],), images) - 0.5)
    length = max(_pixels(images, _param(MOTION_BLUR, "length_px", severity)), 1.0)
    return _filter(images, _line_kernels(length, angle))


def defocus_blur(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Defocus: convolution (kornia ``filter2d``) with an anti-aliased disk of the given radius.

    Deterministic; ``generator`` is unused and accepted for the uniform signature.
    """
    disk = _disk(max(_pixels(images, _param(DEFOCUS_BLUR, "radius_px", severity)), 0.5), images.device)
    return _filter(images, disk / disk.sum())


# ----------------------------------------------------------------------- photometric / codec
BRIGHTNESS: Table = {"shift": (0.1, 0.2, 0.3, 0.4, 0.5)}               # added to HSV value
CONTRAST: Table = {"factor": (0.4, 0.3, 0.2, 0.1, 0.05)}                # (I - mean) * c + mean
JPEG: Table = {"quality": (25.0, 18.0, 15.0, 10.0, 7.0)}


def brightness(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Brighter exposure: ``V + shift`` in HSV at fixed hue and saturation, as ImageNet-C.

    With hue and saturation fixed every channel is proportional to ``V = max(R, G, B)``, so the HSV
    round trip reduces to ``RGB * min(V + shift, 1) / V`` (black becomes grey ``shift``).
    Deterministic; ``generator`` is unused and accepted for the uniform signature.
    """
    value = images.clamp(0, 1).amax(dim=1, keepdim=True)
    brighter = (value + _param(BRIGHTNESS, "shift", severity)).clamp(max=1)
    return torch.where(value > 0, images * brighter / value.clamp_min(1e-12), brighter)


def contrast(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Lower contrast about each image's mean: ``(I - mean) c + mean`` (ImageNet-C).

    Deterministic; ``generator`` is unused and accepted for the uniform signature.
    """
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * _param(CONTRAST, "factor", severity) + mean


def jpeg(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """A real JPEG encode/decode round trip per image with OpenCV (libjpeg, 4:2:0), on the CPU.

    Deterministic; ``generator`` is unused and accepted for the uniform signature.
    """
    quality = int(_param(JPEG, "quality", severity))
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    decoded = []
    for rgb in pixels:
        _, buffer = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
        decoded.append(cv2.imdecode(buffer, cv2.IMREAD_COLOR)[..., ::-1])
    out = torch.from_numpy(np.stack(decoded)).to(images.device).permute(0, 3, 1, 2)
    return out.float() / 255


#: Name -> degradation. Order is the order of the docs and the benchmark.
IMAGE_DEGRADATIONS: dict[str, ImageDegradation] = {
    "fog": ImageDegradation(fog, FOG, "torch (Koschmieder), kornia plasma", depth_aware=True),
    "rain": ImageDegradation(rain, RAIN, "torch + kornia filter2d"),
    "snow": ImageDegradation(snow, SNOW, "torch + kornia filter2d"),
    "night": ImageDegradation(night, NIGHT, "torch (gamma, tint, Poisson-Gaussian)"),
    "gaussian_noise": ImageDegradation(gaussian_noise, GAUSSIAN_NOISE, "torch"),
    "shot_noise": ImageDegradation(shot_noise, SHOT_NOISE, "torch"),
    "impulse_noise": ImageDegradation(impulse_noise, IMPULSE_NOISE, "torch"),
    "motion_blur": ImageDegradation(motion_blur, MOTION_BLUR, "torch kernel + kornia filter2d"),
    "defocus_blur": ImageDegradation(defocus_blur, DEFOCUS_BLUR, "kornia filter2d"),
    "jpeg": ImageDegradation(jpeg, JPEG, "OpenCV (libjpeg)"),
    "brightness": ImageDegradation(brightness, BRIGHTNESS, "torch"),
    "contrast": ImageDegradation(contrast, CONTRAST, "torch"),
}
