"""A tiny hand-written dataset in the nuScenes format, for checking geometry against the devkit.

One log, one scene, ``num_samples`` keyframes, a LIDAR_TOP and two cameras. The ego moves and turns
between the LiDAR and the camera timestamps, so skipping the global round trip gives wrong pixels.
Only what ``NuScenes()`` needs to load (the 13 tables, the files they name, a placeholder map PNG).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from collab_distill.geometry import matrix_to_quaternion

VERSION = "v1.0-mini"
_K = [[1260.0, 0.0, 816.3], [0.0, 1260.0, 491.5], [0.0, 0.0, 1.0]]
CAMERAS = {  # channel: (translation in ego, yaw of the optical axis in degrees, K, (W, H)); nuScenes-like
    "CAM_FRONT": ([1.70, 0.01, 1.51], 0.0, _K, (1600, 900)),
    "CAM_BACK_LEFT": ([1.04, 0.48, 1.56], 110.0, _K, (1600, 900)),
    "CAM_FRONT_RIGHT": ([1.55, -0.49, 1.50], -55.0, _K, (1600, 900)),
    "CAM_BACK_RIGHT": ([1.03, -0.48, 1.57], -110.0, _K, (1600, 900)),
    "CAM_BACK": ([0.03, 0.0, 1.58], 180.0, [[809.2, 0.0, 829.2], [0.0, 809.2, 481.8], [0.0, 0.0, 1.0]], (1600, 900)),
    "CAM_FRONT_LEFT": ([1.52, 0.49, 1.51], 55.0, _K, (1600, 900)),
}


def _yaw_matrix(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def _cam_rotation(yaw_deg: float) -> np.ndarray:
    """Camera->ego rotation: camera looks along its +z, x right, y down; ego is x forward, z up."""
    base = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=np.float64)  # columns: cam axes in ego
    return _yaw_matrix(yaw_deg) @ base


def _ego_pose(t: float) -> tuple[list[float], list[float]]:
    """Ego drives a gentle curve at ~10 m/s; returns (translation, quaternion) at time ``t`` seconds."""
    yaw = 20.0 + 8.0 * t  # degrees
    trans = [400.0 + 10.0 * t, 1100.0 + 3.0 * t * t, 0.3 * t]
    rot = _yaw_matrix(yaw) @ np.array([[1, 0, 0], [0, np.cos(0.01), -np.sin(0.01)], [0, np.sin(0.01), np.cos(0.01)]])
    return trans, matrix_to_quaternion(rot).tolist()


def write_tiny_nuscenes(root: Path, num_samples: int = 2, num_points: int = 6000, seed: int = 0,
                        six_cameras: bool = False) -> Path:
    """Write the dataset under ``root`` and return ``root`` (two cameras, or all six)."""
    cameras = dict(list(CAMERAS.items())[: 6 if six_cameras else 2])
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / VERSION).mkdir(parents=True, exist_ok=True)
    (root / "maps").mkdir(exist_ok=True)
    Image.new("L", (20, 20)).save(root / "maps" / "tiny_map.png")
    tables: dict[str, list[dict]] = {k: [] for k in (
        "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose",
        "log", "scene", "sample", "sample_data", "sample_annotation", "map")}
    tables["category"].append({"token": "cat0", "name": "vehicle.car", "description": "", "index": 17})
    tables["visibility"].append({"token": "1", "level": "v0-40", "description": ""})
    tables["log"].append({"token": "log0", "logfile": "tiny", "vehicle": "v", "date_captured": "2026-01-01",
                          "location": "singapore-onenorth"})
    tables["map"].append({"token": "map0", "log_tokens": ["log0"], "category": "semantic_prior",
                          "filename": "maps/tiny_map.png"})

    lidar_rot = _yaw_matrix(-90.0)  # nuScenes LIDAR_TOP is turned by ~90 degrees in the ego frame
    sensors = {"LIDAR_TOP": ("lidar", [0.94, 0.0, 1.84], matrix_to_quaternion(lidar_rot).tolist(), [])}
    for name, (trans, yaw, k, _) in cameras.items():
        sensors[name] = ("camera", trans, matrix_to_quaternion(_cam_rotation(yaw)).tolist(), k)
    for name, (modality, trans, rot, k) in sensors.items():
        tables["sensor"].append({"token": f"sensor_{name}", "channel": name, "modality": modality})
        tables["calibrated_sensor"].append({"token": f"cs_{name}", "sensor_token": f"sensor_{name}",
                                            "translation": trans, "rotation": rot, "camera_intrinsic": k})

    scene_token = "scene0"
    sample_tokens = [f"sample{i}" for i in range(num_samples)]
    prev_sd: dict[str, str] = {name: "" for name in sensors}
    for i, token in enumerate(sample_tokens):
        t_lidar = 0.5 * i
        tables["sample"].append({"token": token, "timestamp": int(t_lidar * 1e6), "scene_token": scene_token,
                                 "prev": sample_tokens[i - 1] if i else "",
                                 "next": sample_tokens[i + 1] if i + 1 < num_samples else ""})
        for j, name in enumerate(sensors):
            t = t_lidar + 0.012 + 0.009 * j if name != "LIDAR_TOP" else t_lidar  # cameras fire later
            sd_token = f"sd_{name}_{i}"
            trans, rot = _ego_pose(t)
            tables["ego_pose"].append({"token": f"ep_{sd_token}", "timestamp": int(t * 1e6),
                                       "translation": trans, "rotation": rot})
            if name == "LIDAR_TOP":
                filename = f"samples/LIDAR_TOP/tiny__LIDAR_TOP__{i}.pcd.bin"
                xyz = rng.uniform([-50, -50, -2.5], [50, 50, 4.0], size=(num_points, 3))
                pts = np.concatenate([xyz, rng.uniform(0, 255, (num_points, 1)),
                                      rng.integers(0, 32, (num_points, 1))], axis=1).astype(np.float32)
                (root / filename).parent.mkdir(parents=True, exist_ok=True)
                pts.tofile(root / filename)
                width = height = 0
            else:
                width, height = cameras[name][3]
                filename = f"samples/{name}/tiny__{name}__{i}.jpg"
                (root / filename).parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (width, height), (90, 90, 90)).save(root / filename)
            tables["sample_data"].append({
                "token": sd_token, "sample_token": token, "ego_pose_token": f"ep_{sd_token}",
                "calibrated_sensor_token": f"cs_{name}", "timestamp": int(t * 1e6),
                "fileformat": "pcd" if name == "LIDAR_TOP" else "jpg", "is_key_frame": True,
                "height": height, "width": width, "filename": filename, "prev": prev_sd[name], "next": ""})
            if prev_sd[name]:
                next(sd for sd in tables["sample_data"] if sd["token"] == prev_sd[name])["next"] = sd_token
            prev_sd[name] = sd_token
    tables["scene"].append({"token": scene_token, "log_token": "log0", "nbr_samples": num_samples,
                            "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
                            "name": "scene-0061", "description": "tiny, clear"})
    for name, records in tables.items():
        (root / VERSION / f"{name}.json").write_text(json.dumps(records))
    return root
