"""The nuScenes format on disk: deterministic tokens, the tables, and the files they point to.

Layout under the dataset root (``<version>`` is ``v1.0-mini`` or ``v1.0-trainval``)::

    <version>/*.json                      the 13 nuScenes tables + lidarseg.json
    samples/<CHANNEL>/<log>__<CHANNEL>__<timestamp>.jpg | .pcd.bin
    sweeps/LIDAR_TOP/<log>__LIDAR_TOP__<timestamp>.pcd.bin      non-keyframe LiDAR sweeps
    lidarseg/<version>/<lidar sample_data token>_lidarseg.bin   uint8 category index per point
    maps/<map token>.png                  semantic prior (road + sidewalk), 0.1 m per pixel
    paired_clear/<sample token>/<CAMERA>.jpg          (adverse samples, with paired_clear)
    dense/<sample token>/<CAMERA>_class.png | _depth.png   (with dense_maps)
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from data_prep.synthetic.taxonomy import ATTRIBUTES, CATEGORIES, VISIBILITY_LEVELS

TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
          "scene", "sample", "sample_data", "sample_annotation", "map", "lidarseg")
MAP_RESOLUTION = 0.1  # m per pixel, what the devkit's MapMask expects


def make_token(*parts: object) -> str:
    """A 32-hex-digit token, the md5 of the parts: the same parts always give the same token."""
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


class Tables:
    """Records of the nuScenes tables, in insertion order."""

    def __init__(self) -> None:
        self.records: dict[str, list[dict]] = {name: [] for name in TABLES}

    def add(self, table: str, **record: object) -> dict:
        """Append ``record`` to ``table`` and return it (so ``prev``/``next`` can be linked later)."""
        self.records[table].append(record)
        return record

    def extend(self, other: "Tables") -> None:
        for name in TABLES:
            self.records[name].extend(other.records[name])

    def write(self, folder: Path) -> None:
        """Write ``<table>.json`` for every table into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, records in self.records.items():
            (folder / f"{name}.json").write_text(json.dumps(records, indent=1))


def vocabulary_tables() -> Tables:
    """The category (with lidarseg ``index``), attribute and visibility tables."""
    tables = Tables()
    for index, (name, description) in enumerate(CATEGORIES):
        tables.add("category", token=make_token("category", name), name=name, description=description, index=index)
    for name, description in ATTRIBUTES:
        tables.add("attribute", token=make_token("attribute", name), name=name, description=description)
    for token, level, description in VISIBILITY_LEVELS:
        tables.add("visibility", token=token, level=level, description=description)
    return tables


def link_chain(records: list[dict]) -> None:
    """Set ``prev``/``next`` tokens along ``records`` (in order)."""
    for i, rec in enumerate(records):
        rec["prev"] = records[i - 1]["token"] if i else ""
        rec["next"] = records[i + 1]["token"] if i + 1 < len(records) else ""


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
def write_jpeg(path: Path, rgb: np.ndarray, quality: int) -> None:
    """Write ``rgb (H, W, 3)`` uint8 as a baseline JPEG (deterministic bytes for the same pixels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, format="JPEG", quality=quality, optimize=False, progressive=False)


def write_points(path: Path, xyz: np.ndarray, intensity: np.ndarray, ring: np.ndarray) -> None:
    """Write a nuScenes ``.pcd.bin``: float32 ``x, y, z, intensity, ring`` per point."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.concatenate([xyz, intensity[:, None], ring[:, None]], axis=1).astype(np.float32).tofile(path)


def write_labels(path: Path, labels: np.ndarray) -> None:
    """Write a lidarseg label file: one uint8 category index per point."""
    path.parent.mkdir(parents=True, exist_ok=True)
    labels.astype(np.uint8).tofile(path)


def write_dense(folder: Path, channel: str, class_map: np.ndarray, depth: np.ndarray) -> None:
    """Write ``<channel>_class.png`` (uint8 category, 255 = sky) and ``<channel>_depth.png``
    (uint16 depth along the optical axis in centimetres, 0 = sky)."""
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / f"{channel}_class.png"), class_map)
    cm = np.where(np.isfinite(depth), np.clip(np.round(depth * 100), 1, 65535), 0).astype(np.uint16)
    cv2.imwrite(str(folder / f"{channel}_depth.png"), cm)


def read_dense(folder: Path, channel: str) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`write_dense`: ``(H, W)`` uint8 class map and ``(H, W)`` float depth (inf = sky)."""
    class_map = cv2.imread(str(folder / f"{channel}_class.png"), cv2.IMREAD_UNCHANGED)
    cm = cv2.imread(str(folder / f"{channel}_depth.png"), cv2.IMREAD_UNCHANGED).astype(np.float64)
    return class_map, np.where(cm > 0, cm / 100.0, np.inf)


def write_map(path: Path, polygons: list[np.ndarray], extent_m: float) -> None:
    """Rasterise ``(K, 2)`` polygons in global metres into a square semantic-prior map image.

    The devkit maps global ``(x, y)`` to pixel ``(x / 0.1, H - y / 0.1)``; foreground is 255.
    """
    size = int(np.ceil(extent_m / MAP_RESOLUTION))
    img = np.zeros((size, size), np.uint8)
    for poly in polygons:
        pix = np.stack([poly[:, 0] / MAP_RESOLUTION, size - poly[:, 1] / MAP_RESOLUTION], 1)
        cv2.fillPoly(img, [np.round(pix).astype(np.int32)], 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 6])
