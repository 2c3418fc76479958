"""What the world's objects look like: seeded low-poly meshes of vehicles, people, street furniture.

Movable objects (the ones that get boxes) are built in their box frame: origin at the box centre,
x forward (length), y left (width), z up, and they fit inside ``size = (width, length, height)``, the
nuScenes ``sample_annotation.size`` order. Background props are built standing on z = 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_prep.synthetic.materials import Mat
from data_prep.synthetic.meshes import MeshBuilder, TriMesh, box, frustum, icosphere, pose2d, wheel
from data_prep.synthetic.taxonomy import NAME_TO_INDEX as CAT

CAR_COLORS = np.array([[0.75, 0.75, 0.74], [0.03, 0.03, 0.035], [0.38, 0.39, 0.41], [0.18, 0.18, 0.19],
                       [0.50, 0.04, 0.03], [0.05, 0.10, 0.40], [0.06, 0.20, 0.10], [0.55, 0.45, 0.30],
                       [0.60, 0.50, 0.05]], np.float32)
CLOTH_COLORS = np.array([[0.05, 0.05, 0.06], [0.10, 0.12, 0.30], [0.45, 0.05, 0.05], [0.50, 0.50, 0.48],
                         [0.20, 0.30, 0.15], [0.60, 0.45, 0.25], [0.02, 0.15, 0.25]], np.float32)
SKIN_COLORS = np.array([[0.60, 0.42, 0.32], [0.40, 0.25, 0.16], [0.20, 0.12, 0.08], [0.70, 0.55, 0.45]],
                       np.float32)
BUILDING_COLORS = np.array([[0.55, 0.50, 0.42], [0.45, 0.20, 0.14], [0.40, 0.40, 0.40], [0.70, 0.68, 0.62],
                            [0.62, 0.55, 0.30], [0.32, 0.36, 0.42], [0.50, 0.35, 0.28]], np.float32)


@dataclass
class Prop:
    """A movable object's mesh in its box frame, with its nuScenes box ``size`` (w, l, h)."""

    mesh: TriMesh
    size: tuple[float, float, float]


def _pick(rng: np.random.Generator, colors: np.ndarray) -> np.ndarray:
    return colors[rng.integers(len(colors))] * rng.uniform(0.85, 1.15)


def _at(x: float, y: float, z: float, yaw: float = 0.0) -> np.ndarray:
    return pose2d(x, y, z, yaw)


# --------------------------------------------------------------------------------------------
# Vehicles
# --------------------------------------------------------------------------------------------
def _wheels(b: MeshBuilder, cat: int, length: float, width: float, radius: float, axle_inset: float,
            bottom: float) -> None:
    for x in (length / 2 - axle_inset, -length / 2 + axle_inset):
        for y in (width / 2 - 0.12, -width / 2 + 0.12):
            b.add(wheel(radius, 0.22), _at(x, y, bottom + radius), cat, Mat.RUBBER, (0.02, 0.02, 0.02))


def _lights(b: MeshBuilder, cat: int, length: float, width: float, z: float) -> None:
    for y in (width / 2 - 0.3, -width / 2 + 0.3):
        b.add(box(0.04, 0.3, 0.12), _at(length / 2 - 0.02, y, z), cat, Mat.HEADLIGHT, (0.8, 0.8, 0.75))
        b.add(box(0.04, 0.3, 0.12), _at(-length / 2 + 0.02, y, z), cat, Mat.TAILLIGHT, (0.5, 0.03, 0.02))


def car(rng: np.random.Generator) -> Prop:
    """A sedan, hatchback or SUV with a random paint colour."""
    length, width = rng.uniform(3.9, 4.9), rng.uniform(1.7, 1.95)
    height = rng.uniform(1.42, 1.9)
    bottom = -height / 2
    cat, paint = CAT["vehicle.car"], _pick(rng, CAR_COLORS)
    b = MeshBuilder()
    belt = bottom + 0.56 * height
    b.add(box(length, width, belt - bottom - 0.22), _at(0, 0, bottom + 0.22), cat, Mat.CAR_PAINT, paint)
    cabin_len = length * rng.uniform(0.5, 0.62)
    shift = -length * rng.uniform(0.02, 0.1)
    b.add(box(cabin_len, width - 0.12, 0.4 * height), _at(shift, 0, belt), cat, Mat.GLASS, (0.03, 0.04, 0.05))
    b.add(box(cabin_len - 0.1, width - 0.16, 0.05 * height), _at(shift, 0, belt + 0.39 * height), cat,
          Mat.CAR_PAINT, paint)
    _wheels(b, cat, length, width, 0.32, 0.8, bottom)
    _lights(b, cat, length, width, bottom + 0.4 * height)
    return Prop(b.build(), (width, length, height))


def truck(rng: np.random.Generator) -> Prop:
    """A box truck: cab plus cargo box."""
    length, width, height = rng.uniform(6.0, 9.0), rng.uniform(2.3, 2.5), rng.uniform(2.8, 3.6)
    bottom = -height / 2
    cat = CAT["vehicle.truck"]
    b = MeshBuilder()
    cab = 1.9
    cab_h = min(2.6, height - 0.1)
    b.add(box(cab, width, cab_h - 0.7), _at(length / 2 - cab / 2, 0, bottom + 0.45), cat, Mat.CAR_PAINT,
          _pick(rng, CAR_COLORS))
    b.add(box(0.05, width - 0.2, 0.8), _at(length / 2 - 0.02, 0, bottom + cab_h - 0.95), cat, Mat.GLASS,
          (0.03, 0.04, 0.05))
    b.add(box(length - cab - 0.1, width, height - 0.6), _at(-cab / 2, 0, bottom + 0.6), cat, Mat.CAR_PAINT,
          rng.choice([np.array([0.75, 0.75, 0.72]), _pick(rng, CAR_COLORS)]))
    _wheels(b, cat, length, width, 0.5, 1.0, bottom)
    _lights(b, cat, length, width, bottom + 0.8)
    return Prop(b.build(), (width, length, height))


def bus(rng: np.random.Generator) -> Prop:
    """A rigid city bus with a band of windows."""
    length, width, height = rng.uniform(10.5, 12.5), 2.55, rng.uniform(3.0, 3.3)
    bottom = -height / 2
    cat = CAT["vehicle.bus.rigid"]
    b = MeshBuilder()
    b.add(box(length, width - 0.02, height - 0.3), _at(0, 0, bottom + 0.3), cat, Mat.CAR_PAINT,
          _pick(rng, CAR_COLORS[[0, 4, 5, 8]]))
    b.add(box(length - 0.6, width, 1.2), _at(0, 0, bottom + 1.35), cat, Mat.GLASS, (0.03, 0.04, 0.05))
    _wheels(b, cat, length, width, 0.5, 2.2, bottom)
    _lights(b, cat, length, width, bottom + 0.7)
    return Prop(b.build(), (width, length, height))


def _rider(b: MeshBuilder, rng: np.random.Generator, cat: int, x: float, seat_z: float) -> float:
    """A seated rider on a cycle; returns the top of the head."""
    shirt, skin = _pick(rng, CLOTH_COLORS), _pick(rng, SKIN_COLORS)
    b.add(box(0.28, 0.38, 0.6), _at(x, 0, seat_z), cat, Mat.CLOTH, shirt)
    b.add(icosphere(0.11, 1), _at(x + 0.05, 0, seat_z + 0.72), cat, Mat.SKIN, skin)
    for y in (0.12, -0.12):
        b.add(box(0.5, 0.12, 0.12), _at(x + 0.3, y, seat_z + 0.4), cat, Mat.CLOTH, shirt)
        b.add(box(0.12, 0.13, seat_z - 0.05), _at(x + 0.2, y, 0.05), cat, Mat.CLOTH,
              _pick(rng, CLOTH_COLORS))
    return seat_z + 0.83


def cycle(rng: np.random.Generator, motor: bool, rider: bool) -> Prop:
    """A bicycle or motorcycle, with or without a seated rider (who carries the cycle's category)."""
    cat = CAT["vehicle.motorcycle" if motor else "vehicle.bicycle"]
    length, radius, tyre = (2.1, 0.32, 0.12) if motor else (1.75, 0.34, 0.05)
    b = MeshBuilder()
    frame_color = _pick(rng, CAR_COLORS)
    for x in (length / 2 - radius, -length / 2 + radius):
        b.add(wheel(radius, tyre, 12), _at(x, 0, radius), cat, Mat.RUBBER, (0.02, 0.02, 0.02))
    if motor:
        b.add(box(1.1, 0.35, 0.45), _at(0, 0, 0.45), cat, Mat.CAR_PAINT, frame_color)
    else:
        b.add(box(length - 2 * radius, 0.05, 0.05), _at(0, 0, 0.6), cat, Mat.METAL, frame_color)
        b.add(box(0.05, 0.05, 0.45), _at(-0.1, 0, radius), cat, Mat.METAL, frame_color)
    b.add(box(0.06, 0.6 if motor else 0.5, 0.05), _at(length / 2 - radius - 0.1, 0, 1.0 if motor else 1.05),
          cat, Mat.METAL, (0.05, 0.05, 0.05))
    top = 1.12 if motor else 1.1
    if rider:
        top = max(top, _rider(b, rng, cat, -0.15, 0.85 if motor else 0.95))
    mesh = b.build()
    width = 0.8 if motor else 0.65
    mesh.vertices[:, 2] -= top / 2
    return Prop(mesh, (width, length, top))


def pedestrian(rng: np.random.Generator, child: bool = False) -> Prop:
    """A standing person: legs, torso, arms, head."""
    height = rng.uniform(1.05, 1.35) if child else rng.uniform(1.58, 1.92)
    cat = CAT["human.pedestrian.child" if child else "human.pedestrian.adult"]
    s = height / 1.75
    shirt, pants, skin = _pick(rng, CLOTH_COLORS), _pick(rng, CLOTH_COLORS), _pick(rng, SKIN_COLORS)
    b = MeshBuilder()
    leg = 0.82 * s
    for y in (0.1 * s, -0.1 * s):
        b.add(box(0.15 * s, 0.14 * s, leg), _at(0, y, 0), cat, Mat.CLOTH, pants)
        b.add(box(0.12 * s, 0.1 * s, 0.6 * s), _at(0, 0.26 * s * np.sign(y), leg + 0.05 * s), cat, Mat.CLOTH, shirt)
    b.add(box(0.24 * s, 0.42 * s, 0.62 * s), _at(0, 0, leg), cat, Mat.CLOTH, shirt)
    b.add(icosphere(0.11 * s, 1), _at(0, 0, leg + 0.62 * s + 0.16 * s), cat, Mat.SKIN, skin)
    mesh = b.build()
    mesh.vertices[:, 2] -= height / 2
    return Prop(mesh, (0.62 * s, 0.5 * s, height))


# --------------------------------------------------------------------------------------------
# Movable street objects
# --------------------------------------------------------------------------------------------
def traffic_cone(rng: np.random.Generator) -> Prop:
    """An orange cone with white stripes on a square base."""
    h = rng.uniform(0.7, 0.8)
    b = MeshBuilder()
    cat = CAT["movable_object.trafficcone"]
    b.add(box(0.38, 0.38, 0.04), _at(0, 0, 0), cat, Mat.RUBBER, (0.05, 0.05, 0.05))
    b.add(frustum(0.16, 0.03, h - 0.04, 10), _at(0, 0, 0.04), cat, Mat.CONE_STRIPES, (0.85, 0.18, 0.02))
    mesh = b.build()
    mesh.vertices[:, 2] -= h / 2
    return Prop(mesh, (0.4, 0.4, h))


def barrier(rng: np.random.Generator) -> Prop:
    """A striped plastic barrier or a grey concrete block."""
    cat = CAT["movable_object.barrier"]
    b = MeshBuilder()
    if rng.random() < 0.5:
        length, width, height = rng.uniform(1.5, 2.5), 0.4, 1.0
        b.add(box(length, width, height), np.eye(4), cat, Mat.BARRIER_STRIPES, (0.75, 0.08, 0.05))
    else:
        length, width, height = rng.uniform(2.0, 3.5), 0.6, 0.8
        b.add(box(length, width, height), np.eye(4), cat, Mat.CONCRETE, (0.45, 0.45, 0.43))
    mesh = b.build()
    mesh.vertices[:, 2] -= height / 2
    return Prop(mesh, (width, length, height))


def trash_bin(rng: np.random.Generator) -> Prop:
    """A wheeled bin (pushable/pullable)."""
    cat = CAT["movable_object.pushable_pullable"]
    b = MeshBuilder()
    b.add(box(0.7, 0.6, 1.05), _at(0, 0, -0.525), cat, Mat.CAR_PAINT, _pick(rng, CLOTH_COLORS[[0, 4, 1]]))
    return Prop(b.build(), (0.6, 0.7, 1.05))


# --------------------------------------------------------------------------------------------
# Background props (standing on z = 0, category per part, no instance)
# --------------------------------------------------------------------------------------------
def tree(b: MeshBuilder, rng: np.random.Generator, x: float, y: float) -> None:
    """A trunk and an ellipsoid crown (static.vegetation)."""
    cat = CAT["static.vegetation"]
    trunk_h, crown = rng.uniform(1.8, 3.5), rng.uniform(1.4, 3.2)
    b.add(frustum(0.22, 0.14, trunk_h + crown * 0.5, 7), _at(x, y, 0), cat, Mat.BARK, (0.18, 0.12, 0.07))
    verts, tris = icosphere(crown, 1)
    verts = verts * [1.0, 1.0, rng.uniform(0.8, 1.4)]
    b.add((verts, tris), _at(x, y, trunk_h + crown, rng.uniform(0, np.pi)), cat, Mat.FOLIAGE,
          np.array([0.10, 0.22, 0.06], np.float32) * rng.uniform(0.7, 1.3))


def bush(b: MeshBuilder, rng: np.random.Generator, x: float, y: float) -> None:
    """A low squashed sphere of foliage."""
    r = rng.uniform(0.5, 1.1)
    verts, tris = icosphere(r, 1)
    b.add((verts * [1.3, 1.0, 0.7], tris), _at(x, y, 0.5 * r, rng.uniform(0, np.pi)), CAT["static.vegetation"],
          Mat.FOLIAGE, np.array([0.09, 0.2, 0.07], np.float32) * rng.uniform(0.7, 1.3))


def street_lamp(b: MeshBuilder, x: float, y: float, facing: float, height: float = 7.0) -> np.ndarray:
    """A pole with an arm and a lamp head over the road; returns the lamp position ``(3,)``."""
    cat = CAT["static.manmade"]
    grey = (0.3, 0.3, 0.32)
    b.add(frustum(0.12, 0.08, height, 8), _at(x, y, 0), cat, Mat.METAL, grey)
    dx, dy = np.cos(facing), np.sin(facing)
    b.add(box(1.6, 0.08, 0.08), _at(x + 0.8 * dx, y + 0.8 * dy, height - 0.1, facing), cat, Mat.METAL, grey)
    head = np.array([x + 1.5 * dx, y + 1.5 * dy, height - 0.25])
    b.add(box(0.6, 0.3, 0.15), _at(head[0], head[1], head[2], facing), cat, Mat.LAMP, (0.9, 0.9, 0.8))
    return head - [0, 0, 0.1]


def sign(b: MeshBuilder, rng: np.random.Generator, x: float, y: float, facing: float) -> None:
    """A traffic sign: pole and a coloured plate facing ``facing`` (rad)."""
    cat = CAT["static.manmade"]
    b.add(frustum(0.04, 0.04, 2.6, 6), _at(x, y, 0), cat, Mat.METAL, (0.4, 0.4, 0.4))
    color = [(0.6, 0.03, 0.03), (0.03, 0.12, 0.5), (0.75, 0.75, 0.75), (0.7, 0.55, 0.02)][rng.integers(4)]
    b.add(box(0.05, 0.7, 0.7), _at(x, y, 2.2, facing), cat, Mat.SIGN, color)


def traffic_light(b: MeshBuilder, x: float, y: float, facing: float) -> None:
    """A pole with a signal head."""
    cat = CAT["static.manmade"]
    b.add(frustum(0.09, 0.09, 3.2, 8), _at(x, y, 0), cat, Mat.METAL, (0.15, 0.15, 0.15))
    b.add(box(0.3, 0.35, 0.9), _at(x, y, 3.2, facing), cat, Mat.METAL, (0.04, 0.04, 0.04))
    b.add(box(0.02, 0.2, 0.2), _at(x + 0.16 * np.cos(facing), y + 0.16 * np.sin(facing), 3.8, facing), cat,
          Mat.TAILLIGHT, (0.5, 0.03, 0.02))


def bench(b: MeshBuilder, x: float, y: float, yaw: float) -> None:
    """A bench (static.other)."""
    cat = CAT["static.other"]
    b.add(box(1.8, 0.5, 0.08), _at(x, y, 0.42, yaw), cat, Mat.BARK, (0.35, 0.22, 0.1))
    for dx in (-0.75, 0.75):
        b.add(box(0.08, 0.45, 0.42), _at(x + dx * np.cos(yaw), y + dx * np.sin(yaw), 0, yaw), cat, Mat.METAL,
              (0.1, 0.1, 0.1))


def building(b: MeshBuilder, rng: np.random.Generator, x: float, y: float, width: float, depth: float,
             yaw: float) -> None:
    """A block of ``width`` x ``depth`` metres with a random height and facade colour (static.manmade)."""
    height = rng.choice([rng.uniform(5, 12), rng.uniform(12, 35)], p=[0.6, 0.4])
    b.add(box(width, depth, height), _at(x, y, 0, yaw), CAT["static.manmade"], Mat.FACADE,
          _pick(rng, BUILDING_COLORS))
