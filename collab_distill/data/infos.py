"""The info records and the JSON info files written by ``tools/prepare_nuscenes.py`` (the devkit is
never used here).

See ``data_prep/nuscenes_infos.py`` for the schema. Matrices come back as float64 numpy arrays.
``infos_<split>.json`` is the export for people and tools (the check, the restoration data);
training reads the same records from the info store (:mod:`collab_distill.data.info_store`), which
builds the same :class:`SampleInfo` without parsing the whole file in every process.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from collab_distill.errors import UserError

SCHEMA_VERSION = 2  # 2: previous LiDAR sweeps (lidar.sweeps)
#: Previous LiDAR sweeps prepare records per keyframe: nuScenes' default ``nsweeps = 10`` with the keyframe.
MAX_SWEEPS = 9
CAMERA_ORDER = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT")


class InfoFileError(UserError, ValueError):
    """An info file that cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class CameraInfo:
    """One camera of one keyframe: image path (relative to the dataroot), size, ``K (3, 3)``,
    ``lidar2cam (4, 4)`` and the camera timestamp (microseconds)."""

    path: str
    width: int
    height: int
    K: np.ndarray
    lidar2cam: np.ndarray
    timestamp: int


@dataclass(frozen=True)
class SweepInfo:
    """One previous LiDAR sweep of a keyframe: its ``.pcd.bin`` path (relative to the dataroot), timestamp
    (microseconds), point count and ``sweep2lidar (4, 4)`` float64, which maps its points into the
    keyframe's LiDAR frame (sweep LiDAR -> ego(t_sweep) -> global -> ego(t_keyframe) -> keyframe LiDAR)."""

    path: str
    timestamp: int
    num_points: int
    sweep2lidar: np.ndarray


@dataclass(frozen=True)
class SampleInfo:
    """One keyframe. ``conditions`` are tags such as ``clear``, ``night``, ``rain``, ``fog``, ``snow``;
    ``sweeps`` are the LiDAR sweeps before it along the devkit's ``prev`` chain, nearest first."""

    token: str
    scene_name: str
    timestamp: int
    conditions: tuple[str, ...]
    ego2global: np.ndarray
    lidar_path: str
    lidarseg_path: str | None
    num_points: int
    lidar2ego: np.ndarray
    cameras: dict[str, CameraInfo]
    sweeps: tuple[SweepInfo, ...] = ()


@dataclass(frozen=True)
class InfoFile:
    """A split's info file: header fields and its samples."""

    path: Path
    dataroot: Path
    nuscenes_version: str
    devkit_version: str
    split: str
    samples: list[SampleInfo]

    def filter(self, conditions: Iterable[str] | None) -> list[SampleInfo]:
        """Samples with at least one of ``conditions`` (all samples when None or it contains ``all``)."""
        if conditions is None or "all" in conditions:
            return list(self.samples)
        wanted = set(conditions)
        return [s for s in self.samples if wanted & set(s.conditions)]


def _sample(rec: dict[str, Any]) -> SampleInfo:
    cams = {name: CameraInfo(c["path"], int(c["width"]), int(c["height"]), np.asarray(c["K"], dtype=np.float64),
                             np.asarray(c["lidar2cam"], dtype=np.float64), int(c["timestamp"]))
            for name, c in rec["cameras"].items()}
    lidar = rec["lidar"]
    sweeps = tuple(SweepInfo(s["path"], int(s["timestamp"]), int(s["num_points"]),
                             np.asarray(s["sweep2lidar"], dtype=np.float64)) for s in lidar["sweeps"])
    return SampleInfo(rec["token"], rec["scene_name"], int(rec["timestamp"]), tuple(rec["conditions"]),
                      np.asarray(rec["ego2global"], dtype=np.float64), lidar["path"], lidar.get("lidarseg_path"),
                      int(lidar["num_points"]), np.asarray(lidar["lidar2ego"], dtype=np.float64), cams, sweeps)


def load_infos(path: str | Path, dataroot: str | Path | None = None) -> InfoFile:
    """Load and check an info file.

    Args:
        path: ``infos_<split>.json``.
        dataroot: where the nuScenes files are; defaults to the dataroot recorded at preparation.

    Raises:
        InfoFileError: missing file, not an info file, or a schema version this code cannot read.
    """
    path = Path(path)
    if not path.is_file():
        raise InfoFileError(f"{path}: info file not found; run tools/prepare_nuscenes.py first")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InfoFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); prepare it again "
                            f"with --overwrite") from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise InfoFileError(f"{path}: schema version {version!r}, this code reads {SCHEMA_VERSION}; "
                            f"prepare it again with tools/prepare_nuscenes.py --overwrite")
    try:
        samples = [_sample(rec) for rec in data["samples"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise InfoFileError(f"{path}: malformed sample record ({exc.__class__.__name__}: {exc})") from None
    return InfoFile(path, Path(dataroot) if dataroot else Path(data["dataroot"]), data["nuscenes_version"],
                    data["devkit_version"], data["split"], samples)
