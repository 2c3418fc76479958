"""The sensor rig: six cameras and a 32-beam LIDAR_TOP mounted like nuScenes', and their timing.

Extrinsics (sensor -> ego, ego frame: x forward, y left, z up, origin at the rear axle on the ground)
and 1600x900 intrinsics follow the published nuScenes calibration closely; intrinsics are scaled
to the requested image size with the pixel-centre convention of ``collab_distill.geometry``.

Timing: the LiDAR spins clockwise (seen from above) at 20 Hz; a sweep ends at the LiDAR timestamp
``t_L`` with the beam pointing backwards. Each camera is triggered when the beam crosses the centre
of its field of view, so it fires ``(180 deg - yaw_cam) mod 360 / 360 * 50 ms`` after the sweep
began, i.e. between 0 and 50 ms before ``t_L``. The ego moves in between, as in nuScenes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from collab_distill.geometry import pose_matrix, quaternion_to_matrix, resize_intrinsics

NATIVE_SIZE = (1600, 900)  # (width, height) of the reference intrinsics
LIDAR_PERIOD = 0.05        # s, 20 Hz


@dataclass(frozen=True)
class CameraSpec:
    """A camera: ``channel``, ``translation`` (3,) and ``rotation`` (w, x, y, z) camera -> ego, and
    ``(fx, fy, cx, cy)`` at 1600x900. The camera frame is x right, y down, z forward (optical axis)."""

    channel: str
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]
    focal: tuple[float, float, float, float]

    def cam2ego(self) -> np.ndarray:
        """``(4, 4)`` camera -> ego transform."""
        return pose_matrix(self.translation, self.rotation)

    def intrinsics(self, size: tuple[int, int]) -> np.ndarray:
        """``(3, 3)`` K for an image of ``size = (width, height)``."""
        fx, fy, cx, cy = self.focal
        k = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
        return resize_intrinsics(k, size[0] / NATIVE_SIZE[0], size[1] / NATIVE_SIZE[1])

    @property
    def yaw(self) -> float:
        """Heading of the optical axis in the ego frame (rad, 0 = forward, + = left)."""
        axis = quaternion_to_matrix(self.rotation)[:, 2]
        return float(np.arctan2(axis[1], axis[0]))


CAMERAS: tuple[CameraSpec, ...] = (
    CameraSpec("CAM_FRONT", (1.70079, 0.01594, 1.51096), (0.49980, -0.50303, 0.49978, -0.49737),
               (1266.42, 1266.42, 816.27, 491.51)),
    CameraSpec("CAM_FRONT_RIGHT", (1.55085, -0.49340, 1.49575), (0.20603, -0.20269, 0.68245, -0.67136),
               (1260.85, 1260.85, 807.97, 495.33)),
    CameraSpec("CAM_BACK_RIGHT", (1.01488, -0.48057, 1.56240), (0.12281, -0.13240, -0.70043, 0.69050),
               (1259.51, 1259.51, 807.25, 501.20)),
    CameraSpec("CAM_BACK", (0.02833, 0.00345, 1.57910), (0.50379, -0.49740, -0.49419, 0.50455),
               (809.22, 809.22, 829.22, 481.78)),
    CameraSpec("CAM_BACK_LEFT", (1.03569, 0.48480, 1.59097), (0.69242, -0.70316, -0.11648, 0.11203),
               (1256.74, 1256.74, 792.11, 492.78)),
    CameraSpec("CAM_FRONT_LEFT", (1.52388, 0.49463, 1.50933), (0.67573, -0.67363, 0.21214, -0.21123),
               (1272.60, 1272.60, 826.62, 479.75)),
)


@dataclass(frozen=True)
class LidarSpec:
    """A Velodyne HDL-32E-like spinning LiDAR mounted as nuScenes' LIDAR_TOP.

    The LiDAR frame is x right, y forward, z up (a -90 deg yaw from the ego frame, as in nuScenes).
    """

    channel: str = "LIDAR_TOP"
    translation: tuple[float, float, float] = (0.943713, 0.0, 1.84023)
    rotation: tuple[float, float, float, float] = (0.70780, -0.00649, 0.01065, -0.70631)
    beams: int = 32
    elevation_min_deg: float = -30.67
    elevation_max_deg: float = 10.67
    azimuth_steps: int = 1084
    max_range: float = 80.0
    min_range: float = 1.0
    range_noise: float = 0.015

    def lidar2ego(self) -> np.ndarray:
        """``(4, 4)`` LiDAR -> ego transform."""
        return pose_matrix(self.translation, self.rotation)

    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit ray directions in the LiDAR frame in firing order, and the ring (beam) of each.

        Returns:
            dirs: ``(azimuth_steps * beams, 3)`` float64; ring: ``(azimuth_steps * beams,)`` int,
            0 = lowest beam. The sweep starts pointing backwards and turns clockwise.
        """
        elev = np.deg2rad(np.linspace(self.elevation_min_deg, self.elevation_max_deg, self.beams))
        # Heading in the ego frame: 180 deg, decreasing (clockwise); the LiDAR frame is yawed by -90 deg.
        heading = np.pi - 2 * np.pi * np.arange(self.azimuth_steps) / self.azimuth_steps
        az = heading[:, None] + np.pi / 2  # LiDAR-frame azimuth measured from its +x (ego right) axis
        el = np.tile(elev[None], (self.azimuth_steps, 1))
        az = np.broadcast_to(az, el.shape)
        dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)
        ring = np.tile(np.arange(self.beams), self.azimuth_steps)
        return dirs, ring


LIDAR = LidarSpec()


def camera_time_offset(camera: CameraSpec) -> float:
    """Seconds from the LiDAR timestamp to the camera's exposure (negative: the camera fires first)."""
    fraction = ((np.pi - camera.yaw) % (2 * np.pi)) / (2 * np.pi)
    return float(-LIDAR_PERIOD * (1.0 - fraction))


def camera_rays(k: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Directions through every pixel centre in the camera frame, scaled so that ``z = 1``.

    A ray parameter ``t`` along them is then the depth along the optical axis.

    Returns:
        ``(H * W, 3)`` float64, row-major (``v`` slowest).
    """
    width, height = size
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], 1)
    return pix @ np.linalg.inv(k).T
