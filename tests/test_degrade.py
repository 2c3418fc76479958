"""Degradations: registry and errors, shapes/dtypes/range, determinism per seed, PSNR monotone in
severity, depth-aware fog, LiDAR drop/scatter/dropout and the surviving-index map."""
from __future__ import annotations

import math

import cv2
import kornia
import numpy as np
import pytest
import torch

from collab_distill.data.degrade import (
    SEVERITIES,
    available_image_degradations,
    available_lidar_degradations,
    degrade_image,
    degrade_lidar,
    make_generator,
    random_degradation,
)
from collab_distill.data.degrade_image import BRIGHTNESS, FOG, JPEG
from collab_distill.data.degrade_lidar import RAIN, SNOW, rings_of

#: Degradations that draw random numbers, and those that are a fixed function of the image.
RANDOM = {"fog", "rain", "snow", "night", "gaussian_noise", "shot_noise", "impulse_noise", "motion_blur"}
FIXED = {"defocus_blur", "jpeg", "brightness", "contrast"}
IMAGE_NAMES = sorted(RANDOM | FIXED)
LIDAR_NAMES = ["fog", "rain", "snow", "beam_dropout"]


def synthetic_images(batch: int = 4, height: int = 64, width: int = 96, seed: int = 7) -> torch.Tensor:
    """``(B, 3, H, W)`` in [0, 1]: gradients, blocks and stripes, from dark to bright images."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    images = []
    for i in range(batch):
        colour = torch.rand(3, 1, 1, generator=g)
        gradient = colour * (0.3 + 0.5 * yy) + (1 - colour) * 0.4 * xx
        blocks = torch.nn.functional.interpolate(torch.rand(1, 3, height // 16, width // 16, generator=g),
                                                 size=(height, width), mode="nearest")[0]
        stripes = 0.5 + 0.5 * torch.sin(xx * 40 * (i + 1))
        exposure = 0.3 + 0.7 * i / max(batch - 1, 1)
        images.append(((0.5 * gradient + 0.3 * blocks + 0.2 * stripes) * exposure).clamp(0, 1))
    return torch.stack(images)


def synthetic_cloud(beams: int = 32, azimuths: int = 360, seed: int = 12345, ring: bool = True) -> torch.Tensor:
    """``(beams * azimuths, 5 or 4)`` spinning-LiDAR scan: a ground plane 1.8 m below and walls at
    5-75 m; columns x, y, z, intensity (0-255)[, ring]."""
    g = torch.Generator().manual_seed(seed)
    elevation = torch.deg2rad(torch.linspace(-30, 10, beams))[:, None].expand(beams, azimuths)
    azimuth = torch.deg2rad(torch.arange(azimuths) * 360 / azimuths)[None].expand(beams, azimuths)
    ground = torch.where(elevation < 0, 1.8 / torch.sin(-elevation).clamp_min(1e-3), torch.inf)
    distance = torch.minimum(ground, 5 + 70 * torch.rand(beams, azimuths, generator=g))
    xyz = torch.stack([distance * torch.cos(elevation) * torch.cos(azimuth),
                       distance * torch.cos(elevation) * torch.sin(azimuth),
                       distance * torch.sin(elevation)], -1)
    columns = [xyz, 255 * torch.rand(beams, azimuths, 1, generator=g)]
    if ring:
        columns.append(torch.arange(beams, dtype=torch.float32)[:, None, None].expand(beams, azimuths, 1))
    return torch.cat(columns, -1).reshape(beams * azimuths, -1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over the batch of the per-image PSNR (dB) for images in [0, 1]."""
    mse = ((a.double() - b.double()) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-12)
    return (10 * torch.log10(1 / mse)).mean().item()


# --------------------------------------------------------------------------- registry and errors
def test_registries_list_every_degradation():
    assert sorted(available_image_degradations()) == IMAGE_NAMES
    assert available_lidar_degradations() == LIDAR_NAMES


@pytest.mark.parametrize("kind", ["image", "LiDAR"])
def test_unknown_name_lists_valid_names(kind):
    with pytest.raises(ValueError) as info:
        if kind == "image":
            degrade_image(synthetic_images(1), "haze", 1)
        else:
            degrade_lidar(synthetic_cloud(4, 8), "haze", 1)
    valid = available_image_degradations() if kind == "image" else available_lidar_degradations()
    assert str(info.value) == f"unknown {kind} degradation 'haze'; valid: {', '.join(valid)}"


@pytest.mark.parametrize("severity", [0, 6, 2.5, True, "3"])
def test_bad_severity_names_value_and_range(severity):
    with pytest.raises(ValueError, match=r"severity must be an integer in \(1, 2, 3, 4, 5\), got"):
        degrade_image(synthetic_images(1), "fog", severity)
    with pytest.raises(ValueError, match=repr(severity).replace(".", r"\.")):
        degrade_lidar(synthetic_cloud(4, 8), "fog", severity)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*\(2, 1, 8, 8\)"):
        degrade_image(torch.rand(2, 1, 8, 8), "rain", 1)
    with pytest.raises(ValueError, match="float"):
        degrade_image(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "rain", 1)
    with pytest.raises(ValueError, match=r"depth must be \(B, 1, H, W\)"):
        degrade_image(torch.rand(2, 3, 16, 16), "fog", 1, depth=torch.ones(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"C>=4"):
        degrade_lidar(torch.rand(10, 3), "fog", 1)


# ------------------------------------------------------------------------------------ images
@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_image_keeps_shape_dtype_and_range(name):
    images = synthetic_images(2).double()
    for severity in (1, 5):
        out = degrade_image(images, name, severity, generator=0)
        assert out.shape == images.shape and out.dtype == torch.float64 and out.device == images.device
        assert out.min() >= 0 and out.max() <= 1 and torch.isfinite(out).all()
    single = degrade_image(images[0].float(), name, 3, generator=0)
    assert single.shape == images.shape[1:] and single.dtype == torch.float32


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_image_is_deterministic_per_seed(name):
    images = synthetic_images(2)
    first = degrade_image(images, name, 3, generator=11)
    assert torch.equal(first, degrade_image(images, name, 3, generator=11))
    assert torch.equal(first, degrade_image(images, name, 3, generator=torch.Generator().manual_seed(11)))
    other = degrade_image(images, name, 3, generator=12)
    assert torch.equal(first, other) == (name in FIXED)


def test_a_generator_is_advanced_and_none_follows_the_global_seed():
    images = synthetic_images(2)
    rng = torch.Generator().manual_seed(3)
    assert not torch.equal(degrade_image(images, "gaussian_noise", 1, rng),
                           degrade_image(images, "gaussian_noise", 1, rng))
    torch.manual_seed(5)
    first = degrade_image(images, "gaussian_noise", 1)
    torch.manual_seed(5)
    assert torch.equal(first, degrade_image(images, "gaussian_noise", 1))
    assert make_generator(rng, "cpu") is rng


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_psnr_falls_strictly_with_severity(name):
    images = synthetic_images(4)
    for seeds in ((0,) * 5, (1,) * 5, (11, 12, 13, 14, 15)):          # shared and independent draws
        curve = [psnr(degrade_image(images, name, s, generator=seed), images) for s, seed in zip(SEVERITIES, seeds)]
        steps = [a - b for a, b in zip(curve, curve[1:])]
        assert min(steps) > 0.2, f"{name} seeds {seeds}: PSNR {[round(c, 2) for c in curve]}"
        assert curve[0] < 55, f"{name} barely changes the image at severity 1: {curve[0]:.1f} dB"


def test_fog_attenuates_far_pixels_more_than_near_ones():
    images = torch.full((2, 3, 32, 32), 0.2)
    depth = torch.full((2, 1, 32, 32), 5.0)
    depth[..., 16:] = 150.0                                      # right half far away
    depth[..., :4, :] = 0.0                                      # top rows: no depth (sky)
    for severity in SEVERITIES:
        out = degrade_image(images, "fog", severity, generator=0, depth=depth)
        airlight = FOG["airlight"][severity - 1]
        near, far = out[..., 4:, :16], out[..., 4:, 16:]
        assert (near < far).all() and (far <= airlight + 1e-6).all()
        visibility = FOG["visibility_m"][severity - 1]
        t_near = math.exp(-math.log(20) / visibility * 5.0)
        assert torch.allclose(near, torch.tensor(0.2 * t_near + airlight * (1 - t_near)), atol=1e-5)
        assert torch.allclose(out[..., :4, :], torch.tensor(airlight), atol=1e-6)


def test_fog_without_depth_still_fogs_every_image():
    images = synthetic_images(2)
    out = degrade_image(images, "fog", 3, generator=0)
    airlight = FOG["airlight"][2]
    assert ((out - airlight).abs() < (images - airlight).abs()).float().mean() > 0.99


def test_brightness_equals_the_hsv_round_trip():
    images = synthetic_images(2)
    images[0, :, :2, :2] = 0                                     # black pixels too
    for severity, shift in zip(SEVERITIES, BRIGHTNESS["shift"]):
        hsv = kornia.color.rgb_to_hsv(images)
        hsv[:, 2:] = (hsv[:, 2:] + shift).clamp(0, 1)
        assert torch.allclose(degrade_image(images, "brightness", severity), kornia.color.hsv_to_rgb(hsv), atol=1e-5)


def opencv_jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """The JPEG round trip the torch codec replaced: OpenCV's libjpeg (4:2:0), image by image on the CPU."""
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    decoded = []
    for rgb in pixels:
        _, buffer = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
        decoded.append(cv2.imdecode(buffer, cv2.IMREAD_COLOR)[..., ::-1])
    return torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("size", [(64, 96), (61, 93)])
@pytest.mark.parametrize("severity", SEVERITIES)
def test_jpeg_matches_libjpeg_in_distribution(severity, size):
    """The batched torch codec against OpenCV's libjpeg at the same quality: the same loss of PSNR
    (within 0.2 dB), mean and standard deviation (within 0.002), 8-bit values, and within 40 dB of it."""
    images = synthetic_images(4, *size)
    ours = degrade_image(images, "jpeg", severity)
    libjpeg = opencv_jpeg(images, int(JPEG["quality"][severity - 1]))
    assert abs(psnr(ours, images) - psnr(libjpeg, images)) < 0.2
    assert abs(ours.mean() - libjpeg.mean()) < 2e-3 and abs(ours.std() - libjpeg.std()) < 2e-3
    assert psnr(ours, libjpeg) > 40
    assert torch.equal(ours * 255, (ours * 255).round())


def test_random_degradation_draws_per_image_and_is_seeded():
    images = synthetic_images(4).repeat(4, 1, 1, 1)              # 16 images
    names = ["contrast", "brightness", "rain"]
    first = random_degradation(images, names, (2, 4), generator=9)
    again = random_degradation(images, names, (2, 4), generator=9)
    assert torch.equal(first.images, again.images) and first.names == again.names
    assert set(first.names) <= set(names) and len(set(first.names)) > 1
    assert set(first.severities.tolist()) == {2, 4}
    for i, (name, severity) in enumerate(zip(first.names, first.severities.tolist())):
        if name != "rain":                                        # fixed functions: checkable per image
            assert torch.allclose(first.images[i], degrade_image(images[i], name, severity), atol=1e-6)
    other = random_degradation(images, names, (2, 4), generator=10)
    assert other.names != first.names or not torch.equal(other.severities, first.severities)
    with pytest.raises(ValueError, match="'haze'"):
        random_degradation(images, ["rain", "haze"])


def test_one_generator_per_image_makes_each_image_its_own_call():
    images = synthetic_images(5)
    seeds = [3, 1, 4, 1, 5]
    for name in ("night", "fog", "rain", "impulse_noise"):
        batched = degrade_image(images, name, 4, [torch.Generator().manual_seed(s) for s in seeds])
        alone = torch.cat([degrade_image(images[i:i + 1], name, 4, s) for i, s in enumerate(seeds)])
        torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="2 generators for 5 images"):
        degrade_image(images, "rain", 1, [torch.Generator(), torch.Generator()])


# ------------------------------------------------------------------------------------- LiDAR
@pytest.mark.parametrize("name", LIDAR_NAMES)
def test_lidar_is_deterministic_and_the_source_map_is_consistent(name):
    points = synthetic_cloud()
    out, source = degrade_lidar(points, name, 3, generator=4)
    again = degrade_lidar(points, name, 3, generator=4)
    assert torch.equal(out, again.points) and torch.equal(source, again.source)
    assert not torch.equal(out, degrade_lidar(points, name, 3, generator=5).points)
    assert out.shape[1] == points.shape[1] and out.dtype == points.dtype and source.dtype == torch.int64
    assert len(out) == len(source)
    kept = source >= 0
    assert kept.sum() < len(points)                                        # something was lost
    assert torch.all(source[kept].diff() > 0)                              # survivors in original order
    assert kept[:int(kept.sum())].all()                                    # survivors first
    original = points[source[kept]]
    assert torch.equal(out[kept][:, 4], original[:, 4])                    # ring carried along
    if name in ("fog", "beam_dropout"):                                    # xyz untouched
        assert torch.equal(out[kept][:, :3], original[:, :3])
        assert torch.all(out[kept][:, 3] <= original[:, 3])
    else:                                                                  # moved along the ray only
        cosine = torch.nn.functional.cosine_similarity(out[kept][:, :3], original[:, :3])
        assert torch.all(cosine > 1 - 1e-5)
        shift = (out[kept][:, :3].norm(dim=1) - original[:, :3].norm(dim=1)).abs()
        assert shift.max() < 0.5 and shift.max() > 0
        assert torch.equal(out[kept][:, 3], original[:, 3])


def test_lidar_fog_loses_more_points_with_severity_and_range():
    points = synthetic_cloud()
    distance = points[:, :3].norm(dim=1)
    lost_share, spurious = [], []
    for severity in SEVERITIES:
        out, source = degrade_lidar(points, "fog", severity, generator=0)
        survived = torch.zeros(len(points), dtype=torch.bool)
        survived[source[source >= 0]] = True
        lost_share.append(1 - survived.float().mean().item())
        spurious.append(int((source < 0).sum()))
        assert (~survived[distance > 40]).float().mean() > (~survived[distance < 10]).float().mean()
        backscatter = out[source < 0]
        assert torch.all(backscatter[:, :3].norm(dim=1) < 40)
    assert all(a < b for a, b in zip(lost_share, lost_share[1:])), lost_share
    assert all(a < b for a, b in zip(spurious, spurious[1:])), spurious
    assert lost_share[0] < 0.1 and lost_share[-1] > 0.3


@pytest.mark.parametrize("name,table", [("rain", RAIN), ("snow", SNOW)])
def test_lidar_precipitation_adds_near_range_points(name, table):
    points = synthetic_cloud()
    counts = []
    for severity in SEVERITIES:
        out, source = degrade_lidar(points, name, severity, generator=0)
        spurious = out[source < 0]
        counts.append(len(spurious))
        assert torch.all(spurious[:, :3].norm(dim=1) <= table["max_range_m"][severity - 1] + 1e-4)
    assert all(a < b for a, b in zip(counts, counts[1:])), counts


@pytest.mark.parametrize("with_ring", [True, False])
def test_beam_dropout_removes_whole_rings(with_ring):
    points = synthetic_cloud(ring=with_ring)
    rings = rings_of(points)
    assert len(torch.unique(rings)) == 32
    dropped = []
    for severity in SEVERITIES:
        _, source = degrade_lidar(points, "beam_dropout", severity, generator=1)
        survived = torch.zeros(len(points), dtype=torch.bool)
        survived[source] = True
        per_ring = torch.zeros(32).index_add_(0, rings, survived.float()) / torch.bincount(rings, minlength=32)
        assert torch.all((per_ring == 0) | (per_ring == 1)), per_ring
        dropped.append(int((per_ring == 0).sum()))
    assert all(a < b for a, b in zip(dropped, dropped[1:])), dropped
