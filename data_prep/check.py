"""``prepare_nuscenes.py --check K``: re-project samples from the info files and compare with the devkit.

For each checked (sample, camera) the pairs from ``collab_distill.geometry`` on the info file's
``lidar2cam``/``K`` are compared with ``NuScenesExplorer.map_pointcloud_to_image`` on the same points:
same kept set, max pixel error. The devkit stores points as float32 and transforms them in place,
which at global coordinates of ~1 km rounds to ~1e-4 m (up to ~0.1 px at 1 m depth); the check
therefore runs the devkit's own code on float64 points, and reports the float32 figure alongside.
Overlay PNGs (points coloured by depth on the image) are written for a person to look at.
"""
from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from collab_distill.data.dataset import load_points
from collab_distill.data.infos import InfoFile
from collab_distill.geometry import project_to_pairs
from collab_distill.paths import safe_name
from data_prep.nuscenes_infos import get_record


@dataclass
class CheckResult:
    """Agreement with the devkit over the checked (sample, camera) pairs."""

    checked: int             # (sample, camera) combinations
    max_error_px: float      # float64 devkit vs ours (float64)
    max_error_px_float32: float  # the devkit as shipped (float32 points) vs ours (float64)
    same_kept_sets: bool
    overlays: list[Path]


@contextlib.contextmanager
def _devkit_points_as(dtype: type) -> Iterator[None]:
    """Temporarily make ``LidarPointCloud.from_file`` return points of ``dtype``."""
    from nuscenes.utils.data_classes import LidarPointCloud

    original = LidarPointCloud.__dict__["from_file"]

    def from_file(cls, file_name):
        pc = original.__func__(cls, file_name)
        pc.points = pc.points.astype(dtype)
        return pc

    LidarPointCloud.from_file = classmethod(from_file)
    try:
        yield
    finally:
        LidarPointCloud.from_file = original


def overlay(image: Image.Image, uv: np.ndarray, depth: np.ndarray, max_depth: float = 60.0) -> Image.Image:
    """The image with each ``uv (P, 2)`` pixel painted (3x3 dots) in a turbo colour of its depth."""
    from matplotlib import colormaps

    out = np.asarray(image.convert("RGB")).copy()
    colours = (colormaps["turbo"](np.clip(depth / max_depth, 0, 1))[:, :3] * 255).astype(np.uint8)
    cols = np.rint(uv[:, 0]).astype(int)
    rows = np.rint(uv[:, 1]).astype(int)
    order = np.argsort(-depth)  # near points painted last, on top
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            r = np.clip(rows[order] + dr, 0, out.shape[0] - 1)
            c = np.clip(cols[order] + dc, 0, out.shape[1] - 1)
            out[r, c] = colours[order]
    return Image.fromarray(out)


def check_infos(infos: InfoFile, version: str, num_samples: int, out_dir: Path, seed: int = 0) -> CheckResult:
    """Compare ``num_samples`` random samples (all their cameras) with the devkit; write overlays.

    Overlays are named ``<token>_<channel>.png`` after :func:`~collab_distill.paths.safe_name`, so a
    token from the data set never leads out of ``out_dir``.

    Raises:
        PrepareError: an info file's sample is not in the tables (the info file is from other data).
    """
    from nuscenes.nuscenes import NuScenes, NuScenesExplorer

    nusc = NuScenes(version=version, dataroot=str(infos.dataroot), verbose=False)
    explorer = NuScenesExplorer(nusc)
    chosen = random.Random(seed).sample(infos.samples, min(num_samples, len(infos.samples)))
    out_dir.mkdir(parents=True, exist_ok=True)
    errors64, errors32, same, overlays, checked = [], [], True, [], 0
    for info in chosen:
        sample = get_record(nusc, "sample", info.token)
        lidar_token = sample["data"]["LIDAR_TOP"]
        points = load_points(infos.dataroot / info.lidar_path, info.num_points)
        for channel, cam in info.cameras.items():
            cam_token = sample["data"][channel]
            pairs = project_to_pairs(points, cam.lidar2cam, cam.K, (cam.height, cam.width), min_depth=1.0,
                                     low=1.0, dtype=torch.float64)
            ours = pairs.uv.numpy()
            for dtype, errors in ((np.float64, errors64), (np.float32, errors32)):
                with _devkit_points_as(dtype):
                    ref, _, image = explorer.map_pointcloud_to_image(lidar_token, cam_token, min_dist=1.0)
                if ref.shape[1] != len(ours):
                    if dtype is np.float64:
                        same = False
                    continue
                errors.append(float(np.abs(ref[:2].T - ours).max()) if len(ours) else 0.0)
            checked += 1
            path = out_dir / f"{safe_name(info.token)}_{safe_name(channel)}.png"  # no separator, no '..'
            overlay(image, ours, pairs.depth.numpy()).save(path)
            overlays.append(path)
    return CheckResult(checked, max(errors64, default=float("nan")), max(errors32, default=float("nan")), same,
                       overlays)
