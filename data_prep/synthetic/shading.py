"""Camera shading: sun (Lambert + Blinn-Phong) with ray-cast shadows, sky light, a sky gradient,
street lamps and headlights at night, wet and snow-covered surfaces, and the camera response.

Everything is linear radiance until :func:`tone_map`. Lamps and headlights cast no shadows.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from data_prep.synthetic.materials import Mat, Surface, surface, value_noise
from data_prep.synthetic.meshes import TriMesh
from data_prep.synthetic.render import GBuffer, RayCaster

HEADLIGHT = np.array([3.6, 0.0, 0.65])  # ego frame; the two low beams as one source
LAMP_REACH = 60.0  # m, lamps further from the camera are ignored
LAMP_RADIUS = 15.0  # m, a lamp lights only points closer than this (smooth cut-off)
LAMP_RGB = np.array([1.0, 0.78, 0.5], np.float32)
HEADLIGHT_RGB = np.array([1.0, 0.97, 0.9], np.float32)


@dataclass
class Lighting:
    """Illumination and surface state of one rendering.

    Attributes:
        sun: ``(3,)`` unit vector towards the sun (scene frame); sun_rgb: its irradiance (0 = no sun).
        ambient_rgb: sky-light irradiance on a horizontal surface.
        sky_zenith, sky_horizon: ``(3,)`` sky radiance straight up and at the horizon.
        night: lamps, lit windows and vehicle lights on.
        lamps: ``(L, 3)`` street-lamp positions; lamp_power: their intensity (radiance * m^2).
        headlight_power: intensity of the ego's low beams (0 = off).
        wetness: 0..1, darkens horizontal surfaces and makes them mirror-like.
        snow_cover: 0..1, whitens upward-facing surfaces.
        exposure: multiplier from scene radiance to sensor signal (auto-exposure).
    """

    sun: np.ndarray
    sun_rgb: np.ndarray
    ambient_rgb: np.ndarray
    sky_zenith: np.ndarray
    sky_horizon: np.ndarray
    night: bool = False
    lamps: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    lamp_power: float = 0.0
    headlight_power: float = 0.0
    wetness: float = 0.0
    snow_cover: float = 0.0
    exposure: float = 1.0


def sky(view: np.ndarray, lighting: Lighting) -> np.ndarray:
    """``(N, 3)`` sky radiance along unit directions ``view (N, 3)``: gradient plus sun glow."""
    horizon, zenith = lighting.sky_horizon.astype(np.float32), lighting.sky_zenith.astype(np.float32)
    out = horizon + (zenith - horizon) * np.sqrt(np.clip(view[:, 2:3], 0, 1))
    if lighting.sun_rgb.max() > 0:
        cos_sun = np.clip(view @ lighting.sun.astype(np.float32), -1, 1)[:, None]
        out += lighting.sun_rgb.astype(np.float32) * (0.12 * np.exp((cos_sun - 1) * 30) + 4.0 * (cos_sun > 0.9995))
    return out


def sun_visibility(gbuf: GBuffer, caster: RayCaster, sun: np.ndarray) -> np.ndarray:
    """``(N,)`` float32: 1 where a hit point sees the sun, 0 in shadow or facing away (0 for sky)."""
    vis = np.zeros(gbuf.tri.shape, np.float32)
    facing = gbuf.hit & (gbuf.normal @ sun.astype(np.float32) > 0)
    idx = np.flatnonzero(facing)
    origins = gbuf.points[idx] + gbuf.normal[idx] * 0.03
    vis[idx] = ~caster.occluded(origins, np.broadcast_to(sun, (idx.size, 3)))
    return vis


def surfaces(gbuf: GBuffer, mesh: TriMesh) -> Surface:
    """Materials of the hit pixels, in the order of ``np.flatnonzero(gbuf.hit)``."""
    tri = gbuf.tri[gbuf.hit]
    return surface(mesh.material[tri], mesh.color[tri], gbuf.points[gbuf.hit], gbuf.normal[gbuf.hit])


def shade(gbuf: GBuffer, surf: Surface, lighting: Lighting, sun_vis: np.ndarray | None, ego2scene: np.ndarray
          ) -> np.ndarray:
    """Radiance of every pixel.

    Args:
        gbuf: the camera's G-buffer; surf: its :func:`surfaces` (not modified).
        lighting: illumination and surface state.
        sun_vis: ``(N,)`` from :func:`sun_visibility`; None when the sun is off.
        ego2scene: ``(4, 4)`` ego pose at the camera time (headlights).

    Returns:
        ``(H, W, 3)`` float32 linear radiance.
    """
    hit = gbuf.hit
    out = np.empty((hit.size, 3), np.float32)
    out[~hit] = sky(gbuf.view[~hit], lighting)
    p, n, v = gbuf.points[hit], gbuf.normal[hit], gbuf.view[hit]
    surf = _weather_surface(surf, p, n, lighting)
    sun_dir = lighting.sun.astype(np.float32)

    # Diffuse irradiance: sun with shadows, hemispherical sky light, lamps, headlights.
    irradiance = lighting.ambient_rgb.astype(np.float32) * (0.6 + 0.4 * n[:, 2:3])
    sun = np.zeros_like(irradiance)
    if sun_vis is not None:
        sun = (np.clip(n @ sun_dir, 0, None) * sun_vis[hit])[:, None] * lighting.sun_rgb.astype(np.float32)
        irradiance += sun
    lamp_spec = 0.0
    if lighting.night:
        lamp_irr, lamp_spec = _point_lights(p, n, v, surf, lighting, ego2scene)
        irradiance += lamp_irr
    radiance = surf.albedo * irradiance + (surf.emission_night if lighting.night else surf.emission_day)

    # Specular: sun highlight and a Fresnel-weighted mirror reflection of the sky.
    glossy = np.flatnonzero(surf.specular > 0)
    if glossy.size:
        ng, vg = n[glossy], v[glossy]
        half = sun_dir - vg
        half /= np.linalg.norm(half, axis=1, keepdims=True)
        highlight = np.clip(np.einsum("ij,ij->i", ng, half), 0, 1) ** surf.shininess[glossy]
        cos_v = np.clip(-np.einsum("ij,ij->i", ng, vg), 0, 1)
        fresnel = 0.04 + 0.96 * (1 - cos_v) ** 5
        refl = vg + 2 * cos_v[:, None] * ng
        radiance[glossy] += surf.specular[glossy, None] * (highlight[:, None] * sun[glossy] * 4.0
                                                           + fresnel[:, None] * sky(refl, lighting) * 2.0)
    out[hit] = radiance + lamp_spec
    return gbuf.image(out)


def _weather_surface(surf: Surface, p: np.ndarray, n: np.ndarray, lighting: Lighting) -> Surface:
    """A copy of ``surf`` where wet ground is darker and glossy, and snow whitens upward faces."""
    if not (lighting.wetness or lighting.snow_cover):
        return surf
    surf = surf.copy()
    up = np.clip(n[:, 2], 0, 1)
    if lighting.wetness > 0:
        wet = np.flatnonzero((up > 0.9) & (surf.material != Mat.GLASS))
        puddle = value_noise(p[wet, 0] * 0.3, p[wet, 1] * 0.3, 21)
        w = lighting.wetness * (0.6 + 0.4 * puddle)
        surf.albedo[wet] *= (1 - 0.5 * w)[:, None]
        surf.specular[wet] = np.maximum(surf.specular[wet], 0.9 * w)
        surf.shininess[wet] = 80.0
    if lighting.snow_cover > 0:
        drift = value_noise(p[:, 0] * 0.7, p[:, 1] * 0.7, 23)
        cover = np.clip(lighting.snow_cover * up ** 2 * (0.5 + drift), 0, 1)[:, None]
        surf.albedo = surf.albedo * (1 - cover) + 0.85 * cover
    return surf


def _point_lights(p: np.ndarray, n: np.ndarray, v: np.ndarray, surf: Surface, lighting: Lighting,
                  ego2scene: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Light from nearby street lamps (warm, shining down) and the ego's low beams.

    Args:
        p, n, v: ``(M, 3)`` hit points, normals and unit view directions.
        surf: the hits' surfaces (specular strength and exponent).

    Returns:
        ``(M, 3)`` diffuse irradiance and ``(M, 3)`` specular radiance (wet-road glints).
    """
    diffuse = np.zeros(p.shape, np.float32)
    specular = np.zeros_like(diffuse)
    glossy_all = surf.specular > 0

    def add(position: np.ndarray, near: np.ndarray, d: np.ndarray, r2: np.ndarray, power: np.ndarray) -> None:
        """Accumulate a light at ``position`` on hits ``near`` (``d = position - p[near]``, power ``(K, 3)``)."""
        r2 = np.maximum(r2, np.float32(0.25))
        inv_r = 1 / np.sqrt(r2)
        l = d * inv_r[:, None]
        nn = n[near]
        cos_n = np.clip(np.einsum("ij,ij->i", nn, l), 0, 1)
        diffuse[near] += power * (cos_n / r2)[:, None]
        glossy = np.flatnonzero(glossy_all[near])
        if glossy.size:
            g = near[glossy]
            half = l[glossy] - v[g]
            half /= np.linalg.norm(half, axis=1, keepdims=True)
            lobe = np.clip(np.einsum("ij,ij->i", nn[glossy], half), 0, 1) ** surf.shininess[g]
            specular[g] += power[glossy] * (surf.specular[g] * lobe * cos_n[glossy] / r2[glossy])[:, None]

    centre = ego2scene[:3, 3]
    if lighting.lamp_power:
        for lamp in lighting.lamps[np.linalg.norm(lighting.lamps - centre, axis=1) < LAMP_REACH].astype(np.float32):
            near = np.flatnonzero((np.abs(p[:, 0] - lamp[0]) < LAMP_RADIUS) & (np.abs(p[:, 1] - lamp[1]) < LAMP_RADIUS))
            d = lamp - p[near]
            r2 = np.einsum("ij,ij->i", d, d)
            window = np.clip(1 - r2 / LAMP_RADIUS ** 2, 0, 1) ** 2  # smooth cut-off of the 1/r^2 tail
            down = np.clip(d[:, 2] / np.sqrt(np.maximum(r2, 0.25)), 0, 1)  # lamps shine downwards
            add(lamp, near, d, r2, (lighting.lamp_power * (0.25 + 0.75 * down) * window)[:, None] * LAMP_RGB)
    if lighting.headlight_power:
        axis = ego2scene[:3, 0].astype(np.float32)
        light = (ego2scene[:3, :3] @ HEADLIGHT + centre).astype(np.float32)
        cos_outer, cos_inner = np.cos(np.deg2rad(30)), np.cos(np.deg2rad(8))
        near = np.flatnonzero((p - light) @ axis > 0.5)
        d = light - p[near]
        r2 = np.einsum("ij,ij->i", d, d)
        r = np.sqrt(r2)
        beam = np.clip((-(d @ axis) / r - cos_outer) / (cos_inner - cos_outer), 0, 1)
        beam *= np.where(-d[:, 2] / r > 0.02, 0.4, 1.0)  # low beam: dimmer above the horizon
        add(light, near, d, r2, (lighting.headlight_power * beam)[:, None] * HEADLIGHT_RGB)
    return diffuse, specular


def tone_map(signal: np.ndarray) -> np.ndarray:
    """Camera response: exposure-scaled linear signal ``(H, W, 3)`` -> sRGB-like uint8 ``(H, W, 3)``."""
    y = 1.0 - np.exp(-np.clip(signal, 0, None))
    return np.clip(np.round(255.0 * y ** (1 / 2.2)), 0, 255).astype(np.uint8)
