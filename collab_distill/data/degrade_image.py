"""Image degradations: weather, low light, sensor noise, blur and compression, at severities 1-5.

Every function takes float images ``(B, 3, H, W)`` in ``[0, 1]``, an integer ``severity`` in 1..5 and
the batch's :class:`Draws` (the only source of randomness: one generator for the batch, or one per
image), and returns a new ``(B, 3, H, W)`` float32 tensor in ``[0, 1]``, computed for the whole batch
at once on the images' device. Validation, seeding and dtype handling live in
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
from typing import Callable, Sequence

import kornia
import torch
from torch import Tensor

#: Short image side (pixels) at which the ``*_px`` table entries hold.
REFERENCE_SIDE = 224

Table = dict[str, tuple[float, ...]]


@dataclass(frozen=True)
class ImageDegradation:
    """A registered image degradation.

    Attributes:
        apply: ``apply(images (B,3,H,W), severity, draws, **extra) -> (B,3,H,W)``.
        table: parameter name -> five values, one per severity.
        implemented_by: the library doing the work, for the docs and the benchmark.
        depth_aware: whether ``apply`` takes a ``depth`` map ``(B,1,H,W)`` in metres.
    """

    apply: Callable[..., Tensor]
    table: Table
    implemented_by: str
    depth_aware: bool = False


class Draws:
    """The random numbers of one degradation call on ``B`` images, made on the images' device.

    Either one generator serves the whole batch (each draw is one tensor call over the batch), or each
    image has its own: then image ``i``'s values come from ``generators[i]`` in the order a call on that
    image alone would draw them, so its output does not depend on the rest of the batch and equals
    the call on it alone, while the arithmetic still runs once over the batch.

    Args:
        generators: one generator, or ``B`` of them; all on ``device``.
        batch: ``B``.
        device: where the images (and the draws) live.
    """

    def __init__(self, generators: Sequence[torch.Generator], batch: int, device: torch.device) -> None:
        if len(generators) not in (1, batch):
            raise ValueError(f"{len(generators)} generators for {batch} images: give one or one per image")
        self.generators, self.batch, self.device = list(generators), batch, torch.device(device)

    def _fill(self, out: Tensor, draw: Callable[[Tensor, torch.Generator], object]) -> Tensor:
        """``out`` filled by ``draw(view, generator)``: whole with the shared generator, else row by row."""
        if len(self.generators) == 1:
            draw(out, self.generators[0])
        else:
            for row, generator in zip(out, self.generators):
                draw(row, generator)
        return out

    def rand(self, shape: Sequence[int], device: torch.device | None = None,
             dtype: torch.dtype | None = torch.float32) -> Tensor:
        """``shape`` (``shape[0] == B``) uniform in ``[0, 1)`` on the images' device (kornia's ``random_fn``
        signature; ``device`` is that device)."""
        out = torch.empty(tuple(shape), device=self.device, dtype=dtype or torch.float32)
        return self._fill(out, lambda v, g: torch.rand(v.shape, generator=g, device=self.device, dtype=v.dtype, out=v))

    def randn(self, shape: Sequence[int]) -> Tensor:
        """``shape`` (``shape[0] == B``) float32 standard normal."""
        out = torch.empty(tuple(shape), device=self.device)
        return self._fill(out, lambda v, g: torch.randn(v.shape, generator=g, device=self.device, out=v))

    def randint(self, high: int) -> Tensor:
        """``(B,)`` int64 uniform in ``[0, high)``, one per image."""
        out = torch.empty(self.batch, 1, dtype=torch.int64, device=self.device)
        return self._fill(out, lambda v, g: torch.randint(high, v.shape, generator=g, device=self.device,
                                                          out=v)).view(-1)

    def poisson(self, rates: Tensor) -> Tensor:
        """Poisson samples of ``rates`` ``(B, ...)``."""
        if len(self.generators) == 1:
            return torch.poisson(rates, generator=self.generators[0])
        return torch.cat([torch.poisson(rates[i:i + 1], generator=g) for i, g in enumerate(self.generators)])


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


def fog(images: Tensor, severity: int, draws: Draws, depth: Tensor | None = None) -> Tensor:
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
        plasma = kornia.contrib.diamond_square((b, 1, *coarse), roughness=0.6, random_fn=draws.rand,
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


def _precipitation(images: Tensor, severity: int, draws: Draws, table: Table) -> Tensor:
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
    centres = (draws.rand((b, 1, h, w)) < density).float()
    disk = _disk(size / 2, images.device)
    particles = _filter(centres, disk / disk.max()).clamp(0, 1)
    angle = 90.0 + 40.0 * (draws.rand((b,)) - 0.5)
    layer = _filter(particles, _line_kernels(streak, angle))
    layer = (layer * streak).clamp(0, 1) * p["opacity"]                      # streak pixels = opacity
    veiled = images * (1 - p["veil"]) + p["veil"] * p["veil_level"]
    return veiled * (1 - layer) + layer * p["brightness"]


def rain(images: Tensor, severity: int, draws: Draws) -> Tensor:
    """Thin, long, faint grey streaks over a grey haze (table :data:`RAIN`)."""
    return _precipitation(images, severity, draws, RAIN)


def snow(images: Tensor, severity: int, draws: Draws) -> Tensor:
    """Larger, short, nearly opaque white flakes over a bright veil (table :data:`SNOW`)."""
    return _precipitation(images, severity, draws, SNOW)


# -------------------------------------------------------------------------------------- night
NIGHT: Table = {
    "illumination": (0.3, 0.12, 0.05, 0.02, 0.008),     # scene light relative to daylight
    "photons": (2000.0, 2000.0, 2000.0, 2000.0, 2000.0),  # photo-electrons for white at daylight
    "read_noise_e": (2.0, 2.5, 3.0, 3.5, 4.0),           # Gaussian read noise, electrons
    "tint": (0.15, 0.25, 0.35, 0.45, 0.55),              # mix toward the lamp colour
}
#: Lamp colours (linear RGB, max 1): sodium-vapour orange and cold LED/moonlight blue.
LAMPS = torch.tensor([[1.0, 0.55, 0.2], [0.45, 0.6, 1.0]])


def night(images: Tensor, severity: int, draws: Draws) -> Tensor:
    """Low light in linear RGB (sRGB approximated by gamma 2.2).

    The scene is tinted toward a lamp colour (one of :data:`LAMPS` per image), lit at
    ``illumination`` x daylight, and sensed as Poisson(``photons * illumination * L``) electrons plus
    Gaussian read noise. Auto exposure applies a gain of ``illumination ** -0.5``, recovering half of
    the lost light in log terms, so the result is both darker and noisier.
    """
    p = {k: _param(NIGHT, k, severity) for k in NIGHT}
    lamp = LAMPS.to(images.device)[draws.randint(len(LAMPS))]
    tint = (1 - p["tint"]) + p["tint"] * lamp                                  # (B, 3)
    linear = images.clamp(0, 1) ** 2.2 * tint[:, :, None, None]
    electrons_full = p["photons"] * p["illumination"]
    electrons = draws.poisson(linear * electrons_full)
    electrons = electrons + p["read_noise_e"] * draws.randn(electrons.shape)
    linear = electrons / electrons_full * p["illumination"] ** 0.5
    return linear.clamp(0, 1) ** (1 / 2.2)


# ------------------------------------------------------------------------------------- noise
GAUSSIAN_NOISE: Table = {"sigma": (0.08, 0.12, 0.18, 0.26, 0.38)}
SHOT_NOISE: Table = {"photons": (60.0, 25.0, 12.0, 5.0, 3.0)}          # photons at value 1
IMPULSE_NOISE: Table = {"amount": (0.03, 0.06, 0.09, 0.17, 0.27)}      # share of values set to 0 or 1


def gaussian_noise(images: Tensor, severity: int, draws: Draws) -> Tensor:
    """Additive white noise ``I + N(0, sigma^2)`` (ImageNet-C)."""
    sigma = _param(GAUSSIAN_NOISE, "sigma", severity)
    return images + sigma * draws.randn(images.shape)


def shot_noise(images: Tensor, severity: int, draws: Draws) -> Tensor:
    """Photon noise ``Poisson(I * n) / n`` (ImageNet-C)."""
    photons = _param(SHOT_NOISE, "photons", severity)
    return draws.poisson(images.clamp(0, 1) * photons) / photons


def impulse_noise(images: Tensor, severity: int, draws: Draws) -> Tensor:
    """Salt and pepper: each channel value is replaced with 0 or 1 with probability ``amount``."""
    amount = _param(IMPULSE_NOISE, "amount", severity)
    u = draws.rand(images.shape)
    salt_or_pepper = (u < amount / 2).float()                                  # u < amount: replaced
    return torch.where(u < amount, salt_or_pepper, images)


# -------------------------------------------------------------------------------------- blur
MOTION_BLUR: Table = {"length_px": (7.0, 11.0, 15.0, 21.0, 29.0)}      # straight motion path
DEFOCUS_BLUR: Table = {"radius_px": (2.0, 3.0, 4.5, 6.0, 8.0)}          # circle of confusion


def motion_blur(images: Tensor, severity: int, draws: Draws) -> Tensor:
    """Linear motion blur of ``length_px`` at a per-image angle in [-45, 45] deg (ImageNet-C's range),
    applied with kornia ``filter2d``."""
    angle = 90.0 * (draws.rand((images.shape[0],)) - 0.5)
    length = max(_pixels(images, _param(MOTION_BLUR, "length_px", severity)), 1.0)
    return _filter(images, _line_kernels(length, angle))


def defocus_blur(images: Tensor, severity: int, draws: Draws) -> Tensor:
    """Defocus: convolution (kornia ``filter2d``) with an anti-aliased disk of the given radius.

    Deterministic; ``draws`` is unused and accepted for the uniform signature.
    """
    disk = _disk(max(_pixels(images, _param(DEFOCUS_BLUR, "radius_px", severity)), 0.5), images.device)
    return _filter(images, disk / disk.sum())


# ----------------------------------------------------------------------- photometric / codec
BRIGHTNESS: Table = {"shift": (0.1, 0.2, 0.3, 0.4, 0.5)}               # added to HSV value
CONTRAST: Table = {"factor": (0.4, 0.3, 0.2, 0.1, 0.05)}                # (I - mean) * c + mean
JPEG: Table = {"quality": (25.0, 18.0, 15.0, 10.0, 7.0)}


def brightness(images: Tensor, severity: int, draws: Draws) -> Tensor:
    """Brighter exposure: ``V + shift`` in HSV at fixed hue and saturation, as ImageNet-C.

    With hue and saturation fixed every channel is proportional to ``V = max(R, G, B)``, so the HSV
    round trip reduces to ``RGB * min(V + shift, 1) / V`` (black becomes grey ``shift``).
    Deterministic; ``draws`` is unused and accepted for the uniform signature.
    """
    value = images.clamp(0, 1).amax(dim=1, keepdim=True)
    brighter = (value + _param(BRIGHTNESS, "shift", severity)).clamp(max=1)
    return torch.where(value > 0, images * brighter / value.clamp_min(1e-12), brighter)


def contrast(images: Tensor, severity: int, draws: Draws) -> Tensor:
    """Lower contrast about each image's mean: ``(I - mean) c + mean`` (ImageNet-C).

    Deterministic; ``draws`` is unused and accepted for the uniform signature.
    """
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * _param(CONTRAST, "factor", severity) + mean


#: JPEG's example quantisation tables (ITU-T T.81, Annex K), scaled by the quality as libjpeg does.
_JPEG_LUMA = (
    (16, 11, 10, 16, 24, 40, 51, 61), (12, 12, 14, 19, 26, 58, 60, 55), (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62), (18, 22, 37, 56, 68, 109, 103, 77), (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101), (72, 92, 95, 98, 112, 100, 103, 99))
_JPEG_CHROMA = ((17, 18, 24, 47, 99, 99, 99, 99), (18, 21, 26, 66, 99, 99, 99, 99), (24, 26, 56, 99, 99, 99, 99, 99),
                (47, 66, 99, 99, 99, 99, 99, 99), *((99,) * 8,) * 4)
#: JFIF full-range RGB -> YCbCr (rows Y, Cb, Cr; Cb and Cr centred on 0 here, 128 in the file).
_RGB_TO_YCC = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))


def _jpeg_table(base: tuple[tuple[int, ...], ...], quality: int, device: torch.device) -> Tensor:
    """``(8, 8)`` quantisation steps of ``base`` at ``quality`` (libjpeg's ``jpeg_quality_scaling``)."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return ((torch.tensor(base, dtype=torch.float32, device=device) * scale + 50) // 100).clamp(1, 255)


def _dct_matrix(device: torch.device) -> Tensor:
    """``(8, 8)`` orthonormal DCT-II matrix (JPEG's 8x8 transform up to its fixed-point rounding)."""
    k = torch.arange(8, device=device, dtype=torch.float32)
    basis = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / 16) * math.sqrt(2 / 8)
    basis[0] /= math.sqrt(2)
    return basis


def _quantise_blocks(planes: Tensor, table: Tensor, dct: Tensor) -> Tensor:
    """``planes`` ``(B, C, H, W)`` (``H``, ``W`` multiples of 8, level-shifted samples) after a forward DCT
    of each 8x8 block, rounding to multiples of ``table`` and the inverse DCT, rounded to integers."""
    b, c, h, w = planes.shape
    blocks = planes.reshape(b, c, h // 8, 8, w // 8, 8).transpose(3, 4)           # (B, C, h/8, w/8, 8, 8)
    coefficients = dct @ blocks @ dct.T
    restored = dct.T @ (torch.round(coefficients / table) * table) @ dct
    return restored.transpose(3, 4).reshape(b, c, h, w).round()


def jpeg(images: Tensor, severity: int, draws: Draws) -> Tensor:
    """A baseline JPEG encode/decode round trip in torch, batched on the images' device: 8-bit RGB to
    JFIF YCbCr, chroma subsampled 4:2:0 (2x2 means), each 8x8 block's DCT rounded to multiples of
    libjpeg's quality-scaled tables, decoded with libjpeg's "fancy" (triangle, i.e. bilinear) chroma
    upsampling and rounded to 8 bits. Images are padded to multiples of 16 by edge replication and cropped
    back. It differs from OpenCV's libjpeg by libjpeg's fixed-point arithmetic only (its output is within
    0.2 dB of OpenCV's in PSNR to the input and over 40 dB from it: tests/test_degrade.py); the entropy
    coding, which is lossless, is left out.

    Deterministic; ``draws`` is unused and accepted for the uniform signature.
    """
    quality = int(_param(JPEG, "quality", severity))
    b, _, h, w = images.shape
    pixels = (images.clamp(0, 1) * 255).round()
    pixels = torch.nn.functional.pad(pixels, (0, -w % 16, 0, -h % 16), mode="replicate")
    to_ycc = torch.tensor(_RGB_TO_YCC, device=images.device)
    ycc = torch.einsum("ij,bjhw->bihw", to_ycc, pixels)
    ycc = ycc.round() - torch.tensor([128.0, 0.0, 0.0], device=images.device)[:, None, None]  # level shift
    dct = _dct_matrix(images.device)
    luma = _quantise_blocks(ycc[:, :1], _jpeg_table(_JPEG_LUMA, quality, images.device), dct)
    chroma = _quantise_blocks(torch.nn.functional.avg_pool2d(ycc[:, 1:], 2).round(),
                              _jpeg_table(_JPEG_CHROMA, quality, images.device), dct)
    chroma = torch.nn.functional.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    ycc = torch.cat([luma + 128, chroma], dim=1)
    rgb = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_ycc), ycc).round().clamp(0, 255)
    return rgb[..., :h, :w] / 255


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
    "jpeg": ImageDegradation(jpeg, JPEG, "torch (baseline JPEG: DCT, libjpeg tables, 4:2:0)"),
    "brightness": ImageDegradation(brightness, BRIGHTNESS, "torch"),
    "contrast": ImageDegradation(contrast, CONTRAST, "torch"),
}
