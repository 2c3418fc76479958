"""Materials: procedural textures (albedo), glossiness, light emission and LiDAR reflectance.

Textures are functions of the hit point in the scene frame, so a static surface looks the same from
every camera and every sample. All functions are vectorised over ``N`` hit points.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class Mat(IntEnum):
    """Material ids stored per triangle (:attr:`TriMesh.material`)."""

    ASPHALT = 0
    PAINT = 1
    CONCRETE = 2
    GRASS = 3
    FACADE = 4
    CAR_PAINT = 5
    GLASS = 6
    RUBBER = 7
    FOLIAGE = 8
    BARK = 9
    METAL = 10
    SIGN = 11
    CLOTH = 12
    SKIN = 13
    CONE_STRIPES = 14
    BARRIER_STRIPES = 15
    LAMP = 16
    HEADLIGHT = 17
    TAILLIGHT = 18


#: Per material: Blinn-Phong strength and exponent, diffuse reflectance at the LiDAR wavelength
#: (905 nm; paint, signs and vehicle lights are retro-reflective).
_TABLE = {
    Mat.ASPHALT: (0.0, 8, 0.10), Mat.PAINT: (0.05, 10, 0.65), Mat.CONCRETE: (0.0, 8, 0.30),
    Mat.GRASS: (0.0, 8, 0.45), Mat.FACADE: (0.0, 8, 0.30), Mat.CAR_PAINT: (0.35, 60, 0.30),
    Mat.GLASS: (0.8, 120, 0.05), Mat.RUBBER: (0.0, 8, 0.04), Mat.FOLIAGE: (0.0, 8, 0.50),
    Mat.BARK: (0.0, 8, 0.30), Mat.METAL: (0.3, 30, 0.40), Mat.SIGN: (0.2, 20, 0.90), Mat.CLOTH: (0.0, 8, 0.30),
    Mat.SKIN: (0.0, 8, 0.35), Mat.CONE_STRIPES: (0.0, 8, 0.60), Mat.BARRIER_STRIPES: (0.0, 8, 0.60),
    Mat.LAMP: (0.0, 8, 0.30), Mat.HEADLIGHT: (0.6, 80, 0.80), Mat.TAILLIGHT: (0.4, 60, 0.80),
}
SPECULAR, SHININESS, LIDAR_REFLECTANCE = (np.array([_TABLE[m][k] for m in Mat], np.float32) for k in range(3))

#: Light emitted by night (RGB, linear); by day the lamps are off and car lights dim.
EMISSION_NIGHT = np.zeros((len(Mat), 3), np.float32)
EMISSION_NIGHT[Mat.LAMP] = (6.0, 4.8, 3.0)
EMISSION_NIGHT[Mat.HEADLIGHT] = (8.0, 8.0, 7.0)
EMISSION_NIGHT[Mat.TAILLIGHT] = (3.0, 0.15, 0.08)
EMISSION_DAY = EMISSION_NIGHT * 0.0
EMISSION_DAY[Mat.TAILLIGHT] = (0.15, 0.01, 0.0)


# --------------------------------------------------------------------------------------------
# Value noise
# --------------------------------------------------------------------------------------------
_LATTICE = np.random.default_rng(20240601).random(256 * 256).astype(np.float32)


def lattice(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Uniform ``[0, 1)`` pseudo-random value of integer lattice points (a 256 x 256 periodic table;
    ``seed`` shifts the table)."""
    ix = ix.astype(np.int64) + seed * 71
    iy = iy.astype(np.int64) + seed * 113
    return _LATTICE[((iy & 255) << 8) | (ix & 255)]


def value_noise(x: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
    """Smooth 2D value noise in ``[0, 1]`` with unit lattice spacing; ``x, y``: ``(N,)``."""
    fx0, fy0 = np.floor(x), np.floor(y)
    fx, fy = (x - fx0).astype(np.float32), (y - fy0).astype(np.float32)
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    ix, iy = fx0.astype(np.int64), fy0.astype(np.int64)
    a, b = lattice(ix, iy, seed), lattice(ix + 1, iy, seed)
    c, d = lattice(ix, iy + 1, seed), lattice(ix + 1, iy + 1, seed)
    return (a + (b - a) * fx) * (1 - fy) + (c + (d - c) * fx) * fy


def fbm(x: np.ndarray, y: np.ndarray, octaves: int = 3, seed: int = 0) -> np.ndarray:
    """Fractal sum of :func:`value_noise` octaves (each twice the frequency, half the weight), in ``[0, 1]``."""
    total = np.zeros(x.shape, np.float32)
    weight, norm = 1.0, 0.0
    for o in range(octaves):
        f = 2.0 ** o
        total += weight * value_noise(x * f, y * f, seed + o)
        norm += weight
        weight *= 0.5
    return total / norm


def wall_coords(points: np.ndarray, normals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2D texture coordinates of hits: ``(x, y)`` on flat surfaces, ``(along-wall, z)`` on walls."""
    tangent = np.stack([-normals[:, 1], normals[:, 0]], 1)
    tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-6)
    along = points[:, 0] * tangent[:, 0] + points[:, 1] * tangent[:, 1]
    flat = np.abs(normals[:, 2]) > 0.7
    return np.where(flat, points[:, 0], along), np.where(flat, points[:, 1], points[:, 2])


# --------------------------------------------------------------------------------------------
# Surfaces
# --------------------------------------------------------------------------------------------
@dataclass
class Surface:
    """Shading inputs of ``N`` hits.

    Attributes:
        material: ``(N,)`` :class:`Mat` ids.
        albedo: ``(N, 3)`` float32 linear diffuse colour.
        specular: ``(N,)`` Blinn-Phong strength; shininess: ``(N,)`` exponent.
        emission_day, emission_night: ``(N, 3)`` emitted radiance by day and by night (lamps, lit
            windows, vehicle lights).
    """

    material: np.ndarray
    albedo: np.ndarray
    specular: np.ndarray
    shininess: np.ndarray
    emission_day: np.ndarray
    emission_night: np.ndarray

    def copy(self) -> "Surface":
        return Surface(self.material, self.albedo.copy(), self.specular.copy(), self.shininess.copy(),
                       self.emission_day, self.emission_night)


def surface(material: np.ndarray, color: np.ndarray, points: np.ndarray, normals: np.ndarray) -> Surface:
    """Evaluate the procedural materials at ``N`` hits.

    Args:
        material: ``(N,)`` :class:`Mat` ids; color: ``(N, 3)`` base albedo of the hit triangles.
        points: ``(N, 3)`` hit points in the scene frame; normals: ``(N, 3)`` unit normals.
    """
    albedo = color.astype(np.float32)
    specular = SPECULAR[material]
    shininess = SHININESS[material]
    emission_night = EMISSION_NIGHT[material]
    u, v = wall_coords(points, normals)
    tex = np.ones(material.shape, np.float32)  # multiplicative texture

    m = material == Mat.ASPHALT
    tex[m] = 0.75 + 0.5 * fbm(u[m] * 3.0, v[m] * 3.0, 3, seed=1) * (0.8 + 0.4 * value_noise(u[m] * 0.08, v[m] * 0.08, 2))
    m = material == Mat.PAINT
    tex[m] = 0.8 + 0.2 * value_noise(u[m] * 5.0, v[m] * 5.0, 3)
    m = material == Mat.CONCRETE
    joints = (np.abs(u[m] / 1.5 - np.round(u[m] / 1.5)) < 0.02) | (np.abs(v[m] / 1.5 - np.round(v[m] / 1.5)) < 0.02)
    tex[m] = (0.85 + 0.3 * fbm(u[m] * 2.0, v[m] * 2.0, 2, seed=4)) * np.where(joints, 0.6, 1.0)
    m = material == Mat.FOLIAGE
    p = points[m]
    tex[m] = 0.45 + fbm(p[:, 0] * 3 + p[:, 2] * 2, p[:, 1] * 3 - p[:, 2] * 2, 2, seed=9)
    m = np.flatnonzero(material == Mat.GRASS)
    soil = value_noise(u[m] * 0.25, v[m] * 0.25, 5)[:, None]
    blades = (0.6 + 0.8 * fbm(u[m] * 4.0, v[m] * 4.0, 2, seed=6))[:, None]
    albedo[m] = (albedo[m] * (1 - 0.5 * soil) + np.array([0.20, 0.15, 0.08], np.float32) * 0.5 * soil) * blades
    for mat, coord, width in ((Mat.CONE_STRIPES, points[:, 2] + 0.1, 0.15), (Mat.BARRIER_STRIPES, u + v, 0.35)):
        m = np.flatnonzero(material == mat)
        albedo[m[(np.floor(coord[m] / width) % 2) == 0]] = 0.8

    # Facades: a grid of windows (dark glossy glass, a third of them lit at night) and a flat roof.
    m = np.flatnonzero(material == Mat.FACADE)
    uu, vv = u[m], v[m]
    roof = normals[m, 2] > 0.5
    cell_u, cell_v = np.floor(uu / 2.8), np.floor(vv / 3.2)
    fu, fv = uu / 2.8 - cell_u, vv / 3.2 - cell_v
    window = (fu > 0.22) & (fu < 0.78) & (fv > 0.3) & (fv < 0.82) & (vv > 1.0) & ~roof
    tex[m] = 0.85 + 0.3 * fbm(uu * 1.5, vv * 1.5, 2, seed=8)
    albedo[m[roof]] = 0.12 + 0.05 * tex[m[roof], None]
    tex[m[roof]] = 1.0
    albedo[m[window]] = (0.05, 0.07, 0.09)
    tex[m[window]] = 1.0
    specular[m[window]] = 0.7
    shininess[m[window]] = 100.0
    glow = lattice(cell_u, cell_v, 11)
    lit = window & (glow < 0.35)
    emission_night[m[lit]] = np.array([0.2, 0.15, 0.08], np.float32) * (0.4 + 2.0 * glow[lit, None])
    return Surface(material, albedo * tex[:, None], specular, shininess, EMISSION_DAY[material], emission_night)
