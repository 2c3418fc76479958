"""Ray casting with open3d's ``RaycastingScene``: camera G-buffers and LiDAR returns.

A :class:`RayCaster` wraps one frozen world (:meth:`Scene.mesh_at`). :func:`render_gbuffer` casts
one ray through every pixel centre of a camera and keeps, per pixel, the depth, the triangle, the
normal and the hit point; the per-pixel class, instance and depth maps used for tests come from it.
:func:`scan_lidar` casts the LiDAR's beams and returns the geometric returns (radiometry and weather
are applied in :mod:`data_prep.synthetic.weather`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

from data_prep.synthetic.materials import LIDAR_REFLECTANCE
from data_prep.synthetic.meshes import TriMesh
from data_prep.synthetic.sensors import LidarSpec
from data_prep.synthetic.taxonomy import NOISE

SKY = 255  # class-map value of pixels whose ray hits nothing


class RayCaster:
    """Closest-hit and occlusion queries against one triangle mesh (float32, multi-threaded)."""

    def __init__(self, mesh: TriMesh) -> None:
        self.mesh = mesh
        self._scene = o3d.t.geometry.RaycastingScene()
        self._scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                                  o3d.core.Tensor(mesh.triangles.astype(np.uint32)))

    @staticmethod
    def _rays(origins: np.ndarray, dirs: np.ndarray) -> o3d.core.Tensor:
        rays = np.empty((dirs.shape[0], 6), np.float32)
        rays[:, :3] = origins
        rays[:, 3:] = dirs
        return o3d.core.Tensor(rays)

    def cast(self, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """First hits of ``N`` rays.

        Args:
            origins: ``(N, 3)`` or ``(3,)``; dirs: ``(N, 3)``, not necessarily unit length.

        Returns:
            t: ``(N,)`` float32 hit distance in units of ``|dir|`` (inf on a miss);
            tri: ``(N,)`` int64 triangle index (-1 on a miss);
            normal: ``(N, 3)`` float32 unit geometric normal of the hit triangle, facing the ray origin.
        """
        out = self._scene.cast_rays(self._rays(origins, dirs))
        t = out["t_hit"].numpy()
        tri = out["primitive_ids"].numpy().astype(np.int64)
        tri[~np.isfinite(t)] = -1
        normal = out["primitive_normals"].numpy()
        flip = np.einsum("ij,ij->i", normal, dirs.astype(np.float32)) > 0
        normal[flip] *= -1
        return t, tri, normal

    def occluded(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: whether each ray from ``origins (N, 3)`` along ``dirs (N, 3)`` hits anything."""
        return self._scene.test_occlusions(self._rays(origins, dirs)).numpy().astype(bool)


@dataclass
class GBuffer:
    """Per-pixel geometry of one camera image, flattened row-major over ``N = H * W`` pixels.

    Attributes:
        size: ``(width, height)``.
        depth: ``(N,)`` float32 depth along the optical axis, m (inf for sky).
        tri: ``(N,)`` int64 hit triangle (-1 for sky).
        normal: ``(N, 3)`` float32 unit normals facing the camera (scene frame).
        points: ``(N, 3)`` float32 hit points (scene frame; the camera centre for sky).
        view: ``(N, 3)`` float32 unit ray directions (scene frame).
        distance: ``(N,)`` Euclidean distance from the camera centre (inf for sky).
    """

    size: tuple[int, int]
    depth: np.ndarray
    tri: np.ndarray
    normal: np.ndarray
    points: np.ndarray
    view: np.ndarray
    distance: np.ndarray

    @property
    def hit(self) -> np.ndarray:
        return self.tri >= 0

    def image(self, values: np.ndarray) -> np.ndarray:
        """Reshape per-pixel ``(N, ...)`` values to ``(H, W, ...)``."""
        return values.reshape(self.size[1], self.size[0], *values.shape[1:])

    def class_map(self, mesh: TriMesh) -> np.ndarray:
        """``(H, W)`` uint8 lidarseg category of each pixel (:data:`SKY` where nothing is hit)."""
        return self.image(np.where(self.hit, mesh.category[np.maximum(self.tri, 0)], SKY).astype(np.uint8))

    def instance_map(self, mesh: TriMesh) -> np.ndarray:
        """``(H, W)`` int32 agent index of each pixel (-1 for background and sky)."""
        return self.image(np.where(self.hit, mesh.instance[np.maximum(self.tri, 0)], -1).astype(np.int32))

    def depth_map(self) -> np.ndarray:
        """``(H, W)`` float32 depth along the optical axis (inf for sky)."""
        return self.image(self.depth)


def render_gbuffer(caster: RayCaster, cam2scene: np.ndarray, pixel_rays: np.ndarray, size: tuple[int, int]
                   ) -> GBuffer:
    """Cast one ray through each pixel centre of a camera.

    Args:
        cam2scene: ``(4, 4)`` camera -> scene transform (camera: x right, y down, z forward).
        pixel_rays: ``(H * W, 3)`` from :func:`~data_prep.synthetic.sensors.camera_rays`.
        size: ``(width, height)``.
    """
    dirs = (pixel_rays @ cam2scene[:3, :3].T).astype(np.float32)  # z_cam = 1: t is the depth
    origin = cam2scene[:3, 3].astype(np.float32)
    t, tri, normal = caster.cast(origin, dirs)
    norm = np.linalg.norm(dirs, axis=1)
    return GBuffer(size=size, depth=t, tri=tri, normal=normal, points=origin + dirs * np.where(tri >= 0, t, 0)[:, None],
                   view=dirs / norm[:, None], distance=t * norm)


@dataclass
class LidarScan:
    """One sweep, one row per beam firing (misses included, with ``range = inf``).

    Attributes:
        dirs: ``(P, 3)`` unit beam directions in the LiDAR frame, in firing order.
        range: ``(P,)`` float64 range of the return, m (inf: no return).
        ring: ``(P,)`` beam index (0 = lowest).
        category: ``(P,)`` uint8 lidarseg label of the hit.
        instance: ``(P,)`` int32 agent index (-1 for background and misses).
        strength: ``(P,)`` float32 diffuse return strength ``reflectance * |cos(incidence)|``.
        flat: ``(P,)`` bool, hit a horizontal surface (normal within 25 deg of vertical).
    """

    dirs: np.ndarray
    range: np.ndarray
    ring: np.ndarray
    category: np.ndarray
    instance: np.ndarray
    strength: np.ndarray
    flat: np.ndarray

    @property
    def xyz(self) -> np.ndarray:
        """``(P, 3)`` points in the LiDAR frame."""
        return self.dirs * self.range[:, None]

    def select(self, keep: np.ndarray) -> "LidarScan":
        """The rows where the boolean ``keep (P,)`` is true."""
        return LidarScan(self.dirs[keep], self.range[keep], self.ring[keep], self.category[keep],
                         self.instance[keep], self.strength[keep], self.flat[keep])


def scan_lidar(caster: RayCaster, lidar2scene: np.ndarray, spec: LidarSpec, rng: np.random.Generator) -> LidarScan:
    """One motion-compensated sweep from the pose ``lidar2scene (4, 4)`` at the LiDAR timestamp.

    Hits outside ``[spec.min_range, spec.max_range]`` count as misses; ranges get Gaussian noise of
    ``spec.range_noise`` m.
    """
    dirs, ring = spec.rays()
    world_dirs = dirs @ lidar2scene[:3, :3].T
    t, tri, normal = caster.cast(lidar2scene[:3, 3], world_dirs)
    hit = (t >= spec.min_range) & (t <= spec.max_range)
    tri = np.where(hit, tri, 0)
    mesh = caster.mesh
    cos_inc = np.abs(np.einsum("ij,ij->i", world_dirs, normal))
    rng_noise = rng.normal(0.0, spec.range_noise, t.shape)
    return LidarScan(dirs=dirs, range=np.where(hit, t + rng_noise, np.inf), ring=ring,
                     category=np.where(hit, mesh.category[tri], NOISE).astype(np.uint8),
                     instance=np.where(hit, mesh.instance[tri], -1).astype(np.int32),
                     strength=np.where(hit, LIDAR_REFLECTANCE[mesh.material[tri]] * cos_inc, 0).astype(np.float32),
                     flat=hit & (np.abs(normal[:, 2]) > np.cos(np.deg2rad(25))))
