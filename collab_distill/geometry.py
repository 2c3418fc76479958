"""Rigid transforms, the nuScenes LiDAR->camera chain, batched projection and point-pixel pairs.

Conventions (the same as the nuScenes devkit):
  * quaternions are ``(w, x, y, z)``; a pose ``(translation, rotation)`` maps sensor -> parent frame;
  * pixel ``(u, v)`` = (column, row), integer values at pixel centres, so an image of width ``W``
    spans ``u`` in ``[-0.5, W - 0.5]``; resizing by ``s`` maps ``u -> (u + 0.5) * s - 0.5``
    (the convention of ``cv2.resize``, PIL and ``F.interpolate(align_corners=False)``);
  * a point is kept when ``depth > min_depth`` and ``low < u < W - 1``, ``low < v < H - 1``
    (``low = 0`` by default; the devkit's ``map_pointcloud_to_image`` uses ``low = 1``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

ArrayLike = np.ndarray | Sequence[float]
Array = np.ndarray | torch.Tensor


# --------------------------------------------------------------------------------------------
# Poses
# --------------------------------------------------------------------------------------------
def quaternion_to_matrix(q: ArrayLike) -> np.ndarray:
    """Rotation matrix ``(3, 3)`` of a ``(w, x, y, z)`` quaternion (normalised first)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(np.asarray(q, dtype=np.float64))
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion(rot: np.ndarray) -> np.ndarray:
    """``(w, x, y, z)`` quaternion with ``w >= 0`` of a rotation matrix ``(3, 3)``."""
    r = np.asarray(rot, dtype=np.float64)
    # Shepperd's method: pick the largest diagonal term for numerical stability.
    trace = np.trace(r)
    candidates = np.array([trace, r[0, 0], r[1, 1], r[2, 2]])
    i = int(np.argmax(candidates))
    if i == 0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    elif i == 1:
        s = 2.0 * np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = [(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
    elif i == 2:
        s = 2.0 * np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    return q if q[0] >= 0 else -q


def pose_matrix(translation: ArrayLike, rotation: ArrayLike) -> np.ndarray:
    """Homogeneous ``(4, 4)`` transform from a translation ``(3,)`` and a ``(w, x, y, z)`` quaternion."""
    out = np.eye(4)
    out[:3, :3] = quaternion_to_matrix(rotation)
    out[:3, 3] = np.asarray(translation, dtype=np.float64)
    return out


def invert_pose(pose: np.ndarray) -> np.ndarray:
    """Inverse of a rigid ``(..., 4, 4)`` transform, computed as ``[R^T, -R^T t]``."""
    pose = np.asarray(pose, dtype=np.float64)
    out = np.zeros_like(pose)
    rot_t = np.swapaxes(pose[..., :3, :3], -1, -2)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -(rot_t @ pose[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def compose_lidar2cam(lidar2ego: np.ndarray, ego2global_lidar: np.ndarray,
                      ego2global_cam: np.ndarray, cam2ego: np.ndarray) -> np.ndarray:
    """Fold the nuScenes chain into one ``(4, 4)`` transform.

    LiDAR -> ego at LiDAR time -> global -> ego at camera time -> camera:
    ``lidar2cam = cam2ego^-1 @ ego2global_cam^-1 @ ego2global_lidar @ lidar2ego``.
    """
    return invert_pose(cam2ego) @ invert_pose(ego2global_cam) @ ego2global_lidar @ lidar2ego


# --------------------------------------------------------------------------------------------
# Projection
# --------------------------------------------------------------------------------------------
@dataclass
class Pairs:
    """Point-pixel correspondences, one row per (point, camera) pair that passed the masks.

    Attributes:
        point_idx: ``(P,)`` int64 index into the point cloud.
        cam_idx: ``(P,)`` int64 index into the cameras/images.
        uv: ``(P, 2)`` float pixel coordinates (column, row).
        depth: ``(P,)`` float depth along the camera's optical axis, metres.
    """

    point_idx: torch.Tensor
    cam_idx: torch.Tensor
    uv: torch.Tensor
    depth: torch.Tensor

    def __len__(self) -> int:
        return int(self.point_idx.numel())

    def select(self, keep: torch.Tensor) -> "Pairs":
        """The subset given by a boolean mask or an index tensor over the ``P`` pairs."""
        return Pairs(self.point_idx[keep], self.cam_idx[keep], self.uv[keep], self.depth[keep])


def _as_tensor(x: torch.Tensor | np.ndarray, dtype: torch.dtype, device: torch.device | None = None
               ) -> torch.Tensor:
    return torch.as_tensor(x, dtype=dtype, device=device)


def _as_float64(x: torch.Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    """A small tensor or array (calibration, image sizes) as a float64 numpy array."""
    return np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)


def _projection_rows(lidar2cam: torch.Tensor | np.ndarray, intrinsics: torch.Tensor | np.ndarray
                     ) -> torch.Tensor | np.ndarray:
    """``(M, 3, 4)`` ``K @ lidar2cam[:3]``, mapping homogeneous points to ``(u z, v z, z)``, from ``(M, 4, 4)``
    or ``(4, 4)`` transforms and ``(M, 3, 3)`` or ``(3, 3)`` intrinsics (both tensors or both arrays)."""
    return intrinsics.reshape(-1, 3, 3) @ lidar2cam.reshape(-1, 4, 4)[:, :3, :]


def _apply_rows(rows: torch.Tensor, points: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(M, R, N)``: the ``(M, R, 4)`` rows applied to ``N`` points ``(N, >=3)`` in one GEMM."""
    pts = points[:, :3].to(dtype).T
    pts_h = torch.cat([pts, torch.ones(1, pts.shape[1], dtype=dtype, device=pts.device)])
    return (rows.to(dtype).reshape(-1, 4) @ pts_h).view(rows.shape[0], rows.shape[1], -1)


def project_points(points: torch.Tensor | np.ndarray, lidar2cam: torch.Tensor | np.ndarray,
                   intrinsics: torch.Tensor | np.ndarray, dtype: torch.dtype = torch.float32
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Project ``N`` points into ``M`` cameras in one batched call.

    Args:
        points: ``(N, >=3)`` xyz in the LiDAR frame (extra columns are ignored).
        lidar2cam: ``(M, 4, 4)`` or ``(4, 4)`` LiDAR -> camera transforms.
        intrinsics: ``(M, 3, 3)`` or ``(3, 3)`` camera matrices ``K``.
        dtype: computation dtype (``torch.float64`` for sub-millipixel agreement at 1600x900).

    Returns:
        uv: ``(M, N, 2)`` pixel coordinates (undefined where depth <= 0).
        depth: ``(M, N)`` depth along each camera's optical axis.
    """
    pts = _as_tensor(points, dtype)
    rows = _projection_rows(_as_tensor(lidar2cam, torch.float64, pts.device),
                            _as_tensor(intrinsics, torch.float64, pts.device))
    cam = _apply_rows(rows, pts, dtype)
    depth = cam[:, 2]
    return (cam[:, :2] / depth[:, None]).transpose(1, 2), depth


def _image_window(image_size: torch.Tensor | np.ndarray | Sequence[int], low: float) -> np.ndarray:
    """``(M or 1, 2, 2)`` float64: per camera ``[[c_u, r_u], [c_v, r_v]]``, the centre and half-width of
    the open interval ``low < u < W - 1`` (and ``low < v < H - 1``)."""
    upper = _as_float64(image_size).reshape(-1, 2)[:, ::-1] - 1.0  # (W - 1, H - 1)
    return np.stack([(upper + low) / 2, (upper - low) / 2], axis=-1)


def _inside(x, y, z, min_depth: float):
    """``depth > min_depth`` and inside the image, from image-centred ``(u' z, v' z, z)`` where
    ``u' = (u - c_u) / r_u``: the test is ``|u' z| < z`` (division-free, valid as ``z > 0``).
    Works on numpy arrays and torch tensors alike."""
    keep = z > min_depth
    keep &= abs(x) < z
    keep &= abs(y) < z
    return keep


def inside_mask(uv: torch.Tensor, depth: torch.Tensor, image_size: torch.Tensor | Sequence[int],
                min_depth: float = 1.0, low: float = 0.0) -> torch.Tensor:
    """Boolean mask of projections in front of the camera and strictly inside the image.

    Args:
        uv: ``(M, N, 2)`` pixel coordinates.
        depth: ``(M, N)`` depths.
        image_size: ``(H, W)`` shared by all cameras, or ``(M, 2)`` per camera.
        min_depth: keep ``depth > min_depth`` (metres, >= 0).
        low: keep ``low < u < W - 1`` and ``low < v < H - 1``.

    Returns:
        ``(M, N)`` bool.
    """
    window = torch.as_tensor(_image_window(image_size, low), dtype=uv.dtype, device=uv.device)
    centred = (uv - window[:, None, :, 0]) / window[:, None, :, 1]
    return _inside(centred[..., 0] * depth, centred[..., 1] * depth, depth, min_depth)


def _centred_rows(lidar2cam: torch.Tensor | np.ndarray, intrinsics: torch.Tensor | np.ndarray,
                  image_size: torch.Tensor | Sequence[int], low: float) -> tuple[np.ndarray, np.ndarray]:
    """float64 rows ``(M, 3, 4)`` mapping homogeneous points to image-centred ``(u' z, v' z, z)``, where
    ``u' = (u - c_u) / r_u`` and ``v' = (v - c_v) / r_v``, and the window ``(M, 2, 2)`` (see :func:`_image_window`)."""
    rows = _projection_rows(_as_float64(lidar2cam), _as_float64(intrinsics))
    window = np.broadcast_to(_image_window(image_size, low), (len(rows), 2, 2))
    rows[:, :2] = (rows[:, :2] - window[..., :1] * rows[:, 2:]) / window[..., 1:]
    return rows, window


def _kept_pairs(points: Array, rows: Array, window: Array, min_depth: float
                ) -> tuple[Array, Array, Array, Array]:
    """``(point_idx (P,), cam_idx (P,), uv (P, 2), depth (P,))`` of the pairs kept by :func:`_inside`, ordered
    by camera then point, from points ``(N, >=3)``, image-centred rows ``(M, 3, 4)`` (mapping homogeneous
    points to ``(u' z, v' z, z)``) and the window ``(M, 2, 2)`` ``[[c_u, r_u], [c_v, r_v]]``, all of one dtype.

    The same lines run on numpy arrays and on torch tensors (on any device); indices are int64.
    """
    is_numpy = isinstance(points, np.ndarray)
    xp = np if is_numpy else torch
    xyz1 = np.empty((4, len(points)), points.dtype) if is_numpy else points.new_empty(4, len(points))
    xyz1[:3] = points[:, :3].T
    xyz1[3] = 1
    # One camera at a time, into one reused (3, N) buffer that stays in cache through the mask and gathers.
    cam = xp.empty_like(xyz1[:3])
    no_index = np.empty(0, np.int64) if is_numpy else torch.empty(0, dtype=torch.long, device=points.device)
    # seeded with empty entries so that zero cameras give zero pairs
    point_idx, cam_idx, uv, depth = [no_index], [no_index], [xyz1[:2, :0]], [xyz1[2, :0]]
    for m in range(len(rows)):
        xp.matmul(rows[m], xyz1, out=cam)
        keep = _inside(cam[0], cam[1], cam[2], min_depth)
        idx = np.flatnonzero(keep) if is_numpy else keep.nonzero()[:, 0]
        kept = cam.take(idx, axis=1) if is_numpy else cam[:, idx]  # (3, P_m)
        pixels = kept[:2] / kept[2]  # (2, P_m): (u', v'), then (u, v) = c + r (u', v')
        pixels *= window[m, :, 1:]
        pixels += window[m, :, :1]
        point_idx.append(idx)
        cam_idx.append(xp.full_like(idx, m))
        uv.append(pixels)
        depth.append(kept[2])
    uv = xp.concatenate(uv, axis=1)  # (2, P), interleaved below (two row copies beat a 2-D transpose)
    return (xp.concatenate(point_idx), xp.concatenate(cam_idx), xp.stack((uv[0], uv[1]), axis=1),
            xp.concatenate(depth))


def project_to_pairs(points: torch.Tensor | np.ndarray, lidar2cam: torch.Tensor | np.ndarray,
                     intrinsics: torch.Tensor | np.ndarray, image_size: torch.Tensor | Sequence[int],
                     min_depth: float = 1.0, low: float = 0.0, zbuffer_cell: int = 0,
                     dtype: torch.dtype = torch.float32) -> Pairs:
    """Point-pixel pairs of ``N`` points seen by ``M`` cameras (see :func:`project_points`).

    Pairs are ordered by camera, then by point index. With ``zbuffer_cell > 0`` only the nearest
    point per ``cell x cell`` pixel block of each camera is kept (occlusion and parallax filter).
    """
    if min_depth < 0:
        raise ValueError(f"min_depth must be >= 0, got {min_depth}")
    pts = _as_tensor(points, dtype)
    rows, window = _centred_rows(lidar2cam, intrinsics, image_size, low)
    if pts.device.type == "cpu":
        # numpy on the same memory: its small elementwise ops, flatnonzero and take are several times
        # faster than torch's on one core.
        arrays = pts.numpy()
        pairs = Pairs(*map(torch.from_numpy, _kept_pairs(arrays, rows.astype(arrays.dtype),
                                                         window.astype(arrays.dtype), min_depth)))
    else:
        rows, window = (torch.tensor(a, dtype=dtype, device=pts.device) for a in (rows, window))
        pairs = Pairs(*_kept_pairs(pts, rows, window, min_depth))
    if zbuffer_cell > 0:
        pairs = zbuffer(pairs, zbuffer_cell)
    return pairs


def zbuffer(pairs: Pairs, cell: int) -> Pairs:
    """Keep, per camera and ``cell x cell`` pixel block, only the pair with the smallest depth.

    Ties go to the lower point index. The result keeps the (camera, point) order of the input.
    """
    if len(pairs) == 0:
        return pairs
    col = torch.floor((pairs.uv[:, 0] + 0.5) / cell).long()
    row = torch.floor((pairs.uv[:, 1] + 0.5) / cell).long()
    # One integer key per (camera, row, col); sort by depth then stable-sort by key.
    width = int(col.max()) + 1
    height = int(row.max()) + 1
    key = (pairs.cam_idx * height + row) * width + col
    order = torch.argsort(pairs.depth, stable=True)
    order = order[torch.argsort(key[order], stable=True)]
    sorted_key = key[order]
    first = torch.ones_like(sorted_key, dtype=torch.bool)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    keep = torch.sort(order[first]).values
    return pairs.select(keep)


def backproject(uv: torch.Tensor, depth: torch.Tensor, lidar2cam: torch.Tensor,
                intrinsics: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`project_points` for one camera.

    Args:
        uv: ``(N, 2)`` pixels; depth: ``(N,)``; lidar2cam: ``(4, 4)``; intrinsics: ``(3, 3)``.

    Returns:
        ``(N, 3)`` points in the LiDAR frame.
    """
    dtype = uv.dtype
    k = torch.as_tensor(intrinsics, dtype=dtype)
    l2c = torch.as_tensor(lidar2cam, dtype=dtype)
    pix = torch.cat([uv, torch.ones_like(uv[:, :1])], dim=1) * depth[:, None]
    cam = torch.linalg.solve(k, pix.T).T
    cam_h = torch.cat([cam, torch.ones_like(cam[:, :1])], dim=1)
    return (torch.linalg.inv(l2c) @ cam_h.T).T[:, :3]


# --------------------------------------------------------------------------------------------
# Intrinsics under image transforms (the image is edited; the points never are)
# --------------------------------------------------------------------------------------------
def resize_intrinsics(intrinsics: np.ndarray | torch.Tensor, scale_x: float, scale_y: float
                      ) -> np.ndarray | torch.Tensor:
    """``K`` after resizing the image by ``(scale_x, scale_y)``: ``u -> (u + 0.5) * s - 0.5``."""
    k = intrinsics.clone() if isinstance(intrinsics, torch.Tensor) else np.array(intrinsics, dtype=np.float64)
    k[..., 0, :] *= scale_x
    k[..., 1, :] *= scale_y
    k[..., 0, 2] += 0.5 * scale_x - 0.5
    k[..., 1, 2] += 0.5 * scale_y - 0.5
    return k


def crop_intrinsics(intrinsics: np.ndarray | torch.Tensor, left: float, top: float
                    ) -> np.ndarray | torch.Tensor:
    """``K`` after cropping the image so that pixel ``(left, top)`` becomes ``(0, 0)``."""
    k = intrinsics.clone() if isinstance(intrinsics, torch.Tensor) else np.array(intrinsics, dtype=np.float64)
    k[..., 0, 2] -= left
    k[..., 1, 2] -= top
    return k


def hflip_intrinsics(intrinsics: np.ndarray | torch.Tensor, width: int) -> np.ndarray | torch.Tensor:
    """``K`` after a horizontal flip of an image ``width`` pixels wide: ``u -> W - 1 - u``."""
    k = intrinsics.clone() if isinstance(intrinsics, torch.Tensor) else np.array(intrinsics, dtype=np.float64)
    k[..., 0, :] *= -1
    k[..., 0, 2] += width - 1
    return k
