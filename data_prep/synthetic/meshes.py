"""Triangle meshes with per-triangle semantics, and the few primitives the world is built from.

A :class:`TriMesh` carries, for every triangle, its lidarseg category, its material, a base colour
and an instance id, so one ray cast gives everything a renderer or a label writer needs.
Primitives are returned as ``(vertices (V, 3), triangles (T, 3))`` in a local frame and placed with
a ``(4, 4)`` transform by :meth:`MeshBuilder.add`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Prim = tuple[np.ndarray, np.ndarray]


@dataclass
class TriMesh:
    """Triangles and their attributes.

    Attributes:
        vertices: ``(V, 3)`` float64 positions.
        triangles: ``(T, 3)`` int32 vertex indices (counter-clockwise seen from outside).
        category: ``(T,)`` uint8 lidarseg category index.
        material: ``(T,)`` uint8 :class:`~data_prep.synthetic.materials.Mat` value.
        color: ``(T, 3)`` float32 linear base albedo.
        instance: ``(T,)`` int32 object id (index into the scene's agents), -1 for background.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    category: np.ndarray
    material: np.ndarray
    color: np.ndarray
    instance: np.ndarray

    @property
    def num_triangles(self) -> int:
        return int(self.triangles.shape[0])

    @staticmethod
    def empty() -> "TriMesh":
        return TriMesh(np.zeros((0, 3)), np.zeros((0, 3), np.int32), np.zeros(0, np.uint8),
                       np.zeros(0, np.uint8), np.zeros((0, 3), np.float32), np.zeros(0, np.int32))

    @staticmethod
    def concat(meshes: list["TriMesh"]) -> "TriMesh":
        """One mesh holding ``meshes`` in order (triangle ``i`` of mesh ``k`` keeps its attributes)."""
        meshes = [m for m in meshes if m.num_triangles] or [TriMesh.empty()]
        offsets = np.cumsum([0] + [m.vertices.shape[0] for m in meshes[:-1]])
        return TriMesh(
            vertices=np.concatenate([m.vertices for m in meshes]),
            triangles=np.concatenate([m.triangles + o for m, o in zip(meshes, offsets)]).astype(np.int32),
            category=np.concatenate([m.category for m in meshes]),
            material=np.concatenate([m.material for m in meshes]),
            color=np.concatenate([m.color for m in meshes]),
            instance=np.concatenate([m.instance for m in meshes]),
        )

    def transformed(self, pose: np.ndarray) -> "TriMesh":
        """A copy with vertices mapped by the ``(4, 4)`` rigid transform ``pose``."""
        return TriMesh(self.vertices @ pose[:3, :3].T + pose[:3, 3], self.triangles, self.category,
                       self.material, self.color, self.instance)

    def mirrored(self) -> "TriMesh":
        """A copy reflected through the x-z plane (y -> -y), with the winding kept outward."""
        return TriMesh(self.vertices * [1, -1, 1], self.triangles[:, [0, 2, 1]], self.category, self.material,
                       self.color, self.instance)

    def with_instance(self, instance: int) -> "TriMesh":
        """A copy whose triangles all belong to object ``instance``."""
        return TriMesh(self.vertices, self.triangles, self.category, self.material, self.color,
                       np.full(self.num_triangles, instance, np.int32))


class MeshBuilder:
    """Accumulates placed primitives; :meth:`build` returns one :class:`TriMesh`."""

    def __init__(self) -> None:
        self._parts: list[TriMesh] = []

    def add(self, prim: Prim, pose: np.ndarray, category: int, material: int,
            color: tuple[float, float, float] | np.ndarray, instance: int = -1) -> None:
        """Place ``prim`` with the ``(4, 4)`` transform ``pose`` and give all its triangles these attributes."""
        verts, tris = prim
        n = tris.shape[0]
        self._parts.append(TriMesh(
            vertices=verts @ pose[:3, :3].T + pose[:3, 3], triangles=tris.astype(np.int32),
            category=np.full(n, category, np.uint8), material=np.full(n, material, np.uint8),
            color=np.tile(np.asarray(color, np.float32), (n, 1)), instance=np.full(n, instance, np.int32)))

    def build(self) -> TriMesh:
        return TriMesh.concat(self._parts)


# --------------------------------------------------------------------------------------------
# Poses
# --------------------------------------------------------------------------------------------
def pose2d(x: float, y: float, z: float = 0.0, yaw: float = 0.0) -> np.ndarray:
    """``(4, 4)`` transform: rotation ``yaw`` (rad) about +z, then translation ``(x, y, z)``."""
    c, s = np.cos(yaw), np.sin(yaw)
    out = np.eye(4)
    out[:2, :2] = [[c, -s], [s, c]]
    out[:3, 3] = (x, y, z)
    return out


# --------------------------------------------------------------------------------------------
# Primitives (local frames)
# --------------------------------------------------------------------------------------------
_BOX_TRIS = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
                      [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]], np.int32)


def box(lx: float, ly: float, lz: float) -> Prim:
    """Axis-aligned box of extent ``(lx, ly, lz)`` centred on x/y, standing on z = 0."""
    x, y = lx / 2, ly / 2
    verts = np.array([[-x, -y, 0], [x, -y, 0], [x, y, 0], [-x, y, 0],
                      [-x, -y, lz], [x, -y, lz], [x, y, lz], [-x, y, lz]], np.float64)
    return verts, _BOX_TRIS


def quad(lx: float, ly: float) -> Prim:
    """Horizontal rectangle ``(lx, ly)`` centred at the origin, facing +z."""
    x, y = lx / 2, ly / 2
    return (np.array([[-x, -y, 0], [x, -y, 0], [x, y, 0], [-x, y, 0]], np.float64),
            np.array([[0, 1, 2], [0, 2, 3]], np.int32))


def frustum(r_bottom: float, r_top: float, height: float, segments: int = 8) -> Prim:
    """Closed cylinder (``r_bottom == r_top``) or cone frustum along +z from z = 0 to ``height``."""
    a = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    ring = np.stack([np.cos(a), np.sin(a), np.zeros_like(a)], 1)
    verts = np.concatenate([ring * [r_bottom, r_bottom, 0], ring * [r_top, r_top, 0] + [0, 0, height],
                            [[0, 0, 0], [0, 0, height]]])
    i = np.arange(segments)
    j = (i + 1) % segments
    n = segments
    sides = np.concatenate([np.stack([i, j, j + n], 1), np.stack([i, j + n, i + n], 1)])
    caps = np.concatenate([np.stack([np.full(n, 2 * n), j, i], 1), np.stack([np.full(n, 2 * n + 1), i + n, j + n], 1)])
    return verts, np.concatenate([sides, caps]).astype(np.int32)


def wheel(radius: float, width: float, segments: int = 10) -> Prim:
    """Cylinder of ``radius`` with its axis along y (a wheel), centred at the origin."""
    verts, tris = frustum(radius, radius, width, segments)
    verts = verts - [0, 0, width / 2]
    return verts[:, [0, 2, 1]] * [1, -1, 1], tris


def icosphere(radius: float, subdivisions: int = 1) -> Prim:
    """Sphere of ``radius`` around the origin (20 * 4**subdivisions triangles)."""
    t = (1 + 5 ** 0.5) / 2
    verts = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t],
                      [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], np.float64)
    tris = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
                     [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
                     [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]], np.int32)
    for _ in range(subdivisions):
        edges = np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), axis=1)
        uniq, inverse = np.unique(edges, axis=0, return_inverse=True)
        mids = len(verts) + inverse.reshape(3, -1).T  # (T, 3): midpoints of edges 01, 12, 20
        verts = np.concatenate([verts, (verts[uniq[:, 0]] + verts[uniq[:, 1]]) / 2])
        a, b, c = tris.T
        ab, bc, ca = mids.T
        tris = np.concatenate([np.stack(x, 1) for x in ((a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca))])
    verts = verts / np.linalg.norm(verts, axis=1, keepdims=True) * radius
    return verts, tris.astype(np.int32)
