"""Conditions as physics: illumination, atmosphere, precipitation, sensor noise, LiDAR radiometry.

Per scene, :func:`atmosphere_for` draws the physical state (severity, extinction, precipitation
rate, photon budget) from the scene seed. Then:

* :func:`lighting_for` sets sun, sky, lamps, headlights, wet or snowy surfaces and exposure;
* :func:`camera_image` applies Koschmieder attenuation with airlight from per-pixel distance,
  rain streaks / snowflakes occluded by the scene depth, and Poisson-Gaussian sensor noise;
* :func:`lidar_returns` applies two-way extinction and a received-power detection threshold, weaker
  returns from wet ground, and spurious near-range returns from drops, flakes and fog backscatter.

Models and parameters are described in docs/data.md.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from data_prep.synthetic.config import Condition, WeatherConfig
from data_prep.synthetic.render import GBuffer, LidarScan
from data_prep.synthetic.scene import Scene
from data_prep.synthetic.shading import Lighting, tone_map
from data_prep.synthetic.taxonomy import NOISE

KOSCHMIEDER = 3.912  # -ln(0.02): contrast threshold 2 % at the meteorological optical range
DAY_PHOTON_FACTOR = 40.0
LIDAR_MIN_STRENGTH = 0.02 / 80.0 ** 2  # received power at the detection threshold (10 % target at ~180 m)


@dataclass
class Atmosphere:
    """One scene's physical weather state.

    Attributes:
        condition: the scene's condition.
        severity: configured severity times a per-scene factor ``U(0.75, 1.25)``.
        extinction: visible-light extinction coefficient beta (1/m); 0 in clear air.
        lidar_extinction: extinction at 905 nm (1/m).
        rain_rate, snow_rate: precipitation (mm/h, water equivalent), 0 if none.
        scatter_prob: probability that a LiDAR beam returns from a drop, flake or fog droplet.
        scatter_range: mean range of those returns beyond the minimum range (m).
        photons: photo-electrons per unit exposed signal (shot noise); read_noise: Gaussian std.
        wind: slant of falling particles in the image (rad).
    """

    condition: Condition
    severity: float
    extinction: float
    lidar_extinction: float
    rain_rate: float
    snow_rate: float
    scatter_prob: float
    scatter_range: float
    photons: float
    read_noise: float
    wind: float


def atmosphere_for(condition: Condition, cfg: WeatherConfig, rng: np.random.Generator) -> Atmosphere:
    """Draw the physical state of a scene with ``condition`` (see docs/data.md for the models)."""
    sev = cfg.severity * rng.uniform(0.75, 1.25)
    rain = cfg.rain_rate_mm_h * sev if condition.weather == "rain" else 0.0
    snow = cfg.snow_rate_mm_h * sev if condition.weather == "snow" else 0.0
    extinction = lidar_ext = scatter_prob = 0.0
    scatter_range = 1.0
    if condition.weather == "rain":
        # Visibility in rain ~ 6 km * R^-0.6; LiDAR extinction ~ 8e-4 * R^0.6 /m; drop returns near range.
        extinction = KOSCHMIEDER / (6000.0 * rain ** -0.6)
        lidar_ext = 8e-4 * rain ** 0.6
        scatter_prob, scatter_range = 1.5e-3 * rain ** 0.6, 2.0
    elif condition.weather == "fog":
        extinction = KOSCHMIEDER / (cfg.fog_visibility_m / sev)
        lidar_ext = extinction
        scatter_prob, scatter_range = 1.0 - np.exp(-3.0 * extinction), 3.0
    elif condition.weather == "snow":
        # Snow hides more than rain of the same water equivalent: visibility ~ 1.2 km * S^-0.8.
        extinction = KOSCHMIEDER / (1200.0 * snow ** -0.8)
        lidar_ext = extinction
        scatter_prob, scatter_range = 1.2e-2 * snow ** 0.8, 4.0
    photons = cfg.night_photons / sev if condition.night else cfg.night_photons * DAY_PHOTON_FACTOR
    return Atmosphere(condition=condition, severity=float(sev), extinction=float(extinction),
                      lidar_extinction=float(lidar_ext), rain_rate=float(rain), snow_rate=float(snow),
                      scatter_prob=float(scatter_prob), scatter_range=scatter_range, photons=float(photons),
                      read_noise=cfg.read_noise, wind=float(rng.uniform(-0.25, 0.25)))


def clear_atmosphere(cfg: WeatherConfig) -> Atmosphere:
    """Clear daylight (the paired-clear renders): no extinction, no particles, daylight photon budget."""
    return Atmosphere(condition=Condition(), severity=0.0, extinction=0.0, lidar_extinction=0.0, rain_rate=0.0,
                      snow_rate=0.0, scatter_prob=0.0, scatter_range=1.0,
                      photons=cfg.night_photons * DAY_PHOTON_FACTOR, read_noise=cfg.read_noise, wind=0.0)


def lighting_for(atm: Atmosphere, scene: Scene) -> Lighting:
    """Sun, sky, lamps and surface state of a scene under ``atm``."""
    cond = atm.condition
    overcast = {"clear": 0.0, "rain": 0.85, "fog": 0.75, "snow": 0.7}[cond.weather]
    grey = np.array([0.62, 0.64, 0.67])
    if cond.night:
        glow = 0.01 / max(atm.severity, 0.25)
        lighting = Lighting(sun=scene.sun, sun_rgb=np.zeros(3), ambient_rgb=np.array([0.6, 0.65, 0.8]) * glow,
                            sky_zenith=np.array([0.002, 0.003, 0.008]),
                            sky_horizon=np.array([0.012, 0.010, 0.008]) * (1 + overcast),
                            night=True, lamps=scene.lamps, lamp_power=40.0, headlight_power=250.0, exposure=4.0)
    else:
        sun_rgb = np.array([3.0, 2.85, 2.6]) * (1 - overcast) ** 2
        ambient = np.array([0.5, 0.58, 0.72]) * (1 - overcast) + grey * 0.75 * overcast
        lighting = Lighting(sun=scene.sun, sun_rgb=sun_rgb, ambient_rgb=ambient,
                            sky_zenith=np.array([0.22, 0.42, 0.9]) * (1 - overcast) + grey * 0.9 * overcast,
                            sky_horizon=np.array([0.75, 0.82, 0.92]) * (1 - overcast) + grey * 1.1 * overcast,
                            exposure=1.0 + 0.3 * overcast)
    lighting.wetness = float(min(1.0, 0.5 + atm.rain_rate / 40.0)) if atm.rain_rate else 0.0
    lighting.snow_cover = float(min(0.9, 0.3 + 0.1 * atm.snow_rate)) if atm.snow_rate else 0.0
    return lighting


# --------------------------------------------------------------------------------------------
# Camera
# --------------------------------------------------------------------------------------------
def camera_image(radiance: np.ndarray, gbuf: GBuffer, k: np.ndarray, atm: Atmosphere, lighting: Lighting,
                 rng: np.random.Generator) -> np.ndarray:
    """Turn a rendered radiance image into the camera's 8-bit image under the scene's weather.

    Args:
        radiance: ``(H, W, 3)`` linear radiance from :func:`~data_prep.synthetic.shading.shade`.
        gbuf: the image's G-buffer (depth and distance); k: ``(3, 3)`` intrinsics.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    img = radiance.astype(np.float32)
    airlight = lighting.sky_horizon.astype(np.float32) * 0.9
    if atm.extinction > 0:
        transmission = gbuf.image(np.exp(-atm.extinction * np.minimum(gbuf.distance, 1e4)))[..., None]
        img = img * transmission + airlight * (1 - transmission)
    if atm.rain_rate or atm.snow_rate:
        img = _particles(img, gbuf.depth_map(), k, atm, float(np.mean(airlight)) * 1.4 + 0.02, rng)
    signal = np.clip(img * lighting.exposure, 0, None)
    if atm.condition.night:  # few photons: exact shot noise, then read noise
        noisy = rng.poisson(signal * atm.photons) / atm.photons
        noisy = noisy + atm.read_noise * rng.standard_normal(signal.shape, dtype=np.float32)
    else:  # many photons: the Gaussian limit of shot noise (same mean and variance) plus read noise
        std = np.sqrt(signal / atm.photons + atm.read_noise ** 2)
        noisy = signal + std * rng.standard_normal(signal.shape, dtype=np.float32)
    return tone_map(noisy.astype(np.float32))


def _particles(img: np.ndarray, depth: np.ndarray, k: np.ndarray, atm: Atmosphere, brightness: float,
               rng: np.random.Generator) -> np.ndarray:
    """Blend rain streaks or snowflakes into ``img (H, W, 3)``; a particle behind a surface is hidden.

    Particles fill the view volume uniformly up to 10 m (rain) or 15 m (snow); the streak length is
    the fall distance during a 1/60 s exposure projected at the particle's depth.
    """
    height, width = depth.shape
    focal = float(k[0, 0])
    snow = atm.snow_rate > 0
    area = (width * height) / (448 * 252)
    count = int(area * (120 * atm.snow_rate ** 0.8 if snow else 60 * atm.rain_rate ** 0.6))
    z_max = 15.0 if snow else 10.0
    z = np.maximum(z_max * rng.random(count) ** (1 / 3), 0.4)  # uniform in the view frustum
    u = rng.uniform(0, width, count)
    v = rng.uniform(0, height, count)
    visible = depth[v.astype(int), u.astype(int)] > z
    z, u, v = z[visible], u[visible], v[visible]
    fall = (1.2 if snow else 7.5) / 60.0  # m travelled during the exposure
    length = focal * fall / z
    du, dv = length * np.sin(atm.wind), length * np.cos(atm.wind)
    thick = np.clip(np.round(focal * (0.012 if snow else 0.003) / z), 1, 6).astype(int)
    alpha = np.clip((0.9 if snow else 0.35) * (2.0 / z) ** 0.5, 0.05, 0.9)
    layer = np.zeros((height, width), np.uint8)
    scale = 16  # sub-pixel precision of cv2's drawing (4 fractional bits)
    for i in range(z.size):
        p0 = (int(u[i] * scale), int(v[i] * scale))
        p1 = (int((u[i] + du[i]) * scale), int((v[i] + dv[i]) * scale))
        value = int(alpha[i] * 255)
        if snow:
            cv2.circle(layer, p0, int(thick[i] * scale / 2 + scale / 2), value, -1, cv2.LINE_AA, 4)
        else:
            cv2.line(layer, p0, p1, value, int(thick[i]), cv2.LINE_AA, 4)
    if snow:
        layer = cv2.GaussianBlur(layer, (3, 3), 0)
    a = layer.astype(np.float32)[..., None] / 255.0
    return img * (1 - a) + brightness * a


# --------------------------------------------------------------------------------------------
# LiDAR
# --------------------------------------------------------------------------------------------
def lidar_returns(scan: LidarScan, atm: Atmosphere, min_range: float, rng: np.random.Generator
                  ) -> tuple[LidarScan, np.ndarray]:
    """Apply radiometry and weather to a sweep and keep the points the sensor would report.

    Received power ``P = strength * exp(-2 alpha r) / r^2`` (strength = reflectance * |cos incidence|,
    reduced on wet ground); returns below :data:`LIDAR_MIN_STRENGTH` are lost. With probability
    ``atm.scatter_prob`` a beam also gets a return from a drop, flake or fog droplet at range
    ``min_range + Exp(atm.scatter_range)``; when it is the stronger return the sensor reports it
    instead (category ``noise``, instance -1). Beams without a hard target can scatter too.

    Returns:
        the reported points (firing order) and their ``(P,)`` float32 intensity in 0..255.
    """
    strength = scan.strength.copy()
    if atm.rain_rate:
        strength[scan.flat] *= 1.0 - 0.6 * min(1.0, 0.5 + atm.rain_rate / 40.0)
    r = np.where(np.isfinite(scan.range), scan.range, 1e6)
    power = strength * np.exp(-2 * atm.lidar_extinction * r) / r ** 2
    keep = np.isfinite(scan.range) & (power >= LIDAR_MIN_STRENGTH)
    out = replace(scan, strength=strength)
    if atm.scatter_prob > 0:
        r_s = min_range + rng.exponential(atm.scatter_range, r.size)
        s_strength = rng.uniform(0.02, 0.3 if atm.snow_rate else 0.08, r.size).astype(np.float32)
        s_power = s_strength * np.exp(-2 * atm.lidar_extinction * r_s) / r_s ** 2
        scatter = (rng.random(r.size) < atm.scatter_prob) & (s_power > np.where(keep, power, 0.0))
        out = replace(out, range=np.where(scatter, r_s, out.range),
                      category=np.where(scatter, NOISE, out.category).astype(np.uint8),
                      instance=np.where(scatter, -1, out.instance).astype(np.int32),
                      strength=np.where(scatter, s_strength, out.strength).astype(np.float32),
                      flat=out.flat & ~scatter)
        keep |= scatter
    out = out.select(keep)
    intensity = np.clip(np.round(out.strength * np.exp(-2 * atm.lidar_extinction * out.range) * 255 * 1.5), 0, 255)
    return out, intensity.astype(np.float32)
