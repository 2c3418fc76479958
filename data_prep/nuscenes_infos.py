"""nuScenes (real or synthetic) -> versioned JSON info files, one per split. The devkit is used here only.

Output layout of ``prepare(dataroot, version, out)``::

    out/infos_train.json, infos_val.json (or infos_test.json)   the info files (schema below), for humans
    out/infos_train/, infos_val/ (or infos_test/)                the same records as memory-mapped arrays,
                                                                what training reads (collab_distill.data.info_store)
    out/summary.json                                            counts per split/condition, problems
    out/parts/<split>/<scene>.json                              per-scene results (resume state)

An info file is ``{"schema_version", "devkit_version", "nuscenes_version", "split", "dataroot",
"samples": [record, ...]}``; a record holds, per keyframe::

    token, scene_name, timestamp (us), conditions [tags], ego2global (4x4, LiDAR time),
    lidar: {path, lidarseg_path | null, num_points, lidar2ego (4x4),
            sweeps: [{path, timestamp, num_points, sweep2lidar (4x4)}, ...]},
    cameras: {CHANNEL: {path, width, height, K (3x3), lidar2cam (4x4), timestamp}}

Paths are relative to ``dataroot``; matrices are nested lists of float64. ``lidar2cam`` folds the full
chain LiDAR -> ego(t_lidar) -> global -> ego(t_cam) -> camera. ``sweeps`` are the LiDAR sample_data
before the keyframe along the devkit's ``prev`` chain (non-keyframe sweeps, and earlier keyframes once
the chain reaches them, as ``LidarPointCloud.from_file_multisweep`` reads them), nearest first, at
most :data:`MAX_SWEEPS`; ``sweep2lidar`` folds sweep LiDAR -> ego(t_sweep) -> global -> ego(t_lidar)
-> keyframe LiDAR. The chain stops early at a missing or damaged sweep file (listed as a problem;
the keyframe stays usable). Splits follow
``nuscenes.utils.splits.create_splits_scenes()``; ``mini_train``/``mini_val`` are written as
``train``/``val``.
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from collab_distill.data.conditions import parse_conditions
from collab_distill.data.dataset import POINT_COLUMNS
from collab_distill.data.info_store import META_FILE, store_path, write_info_store
from collab_distill.data.infos import MAX_SWEEPS, SCHEMA_VERSION
from collab_distill.data.taxonomy import NUSCENES_VERSIONS
from collab_distill.errors import UserError
from collab_distill.geometry import compose_lidar2cam, pose_matrix
from collab_distill.paths import UnsafePathError, join_inside, safe_name

log = logging.getLogger(__name__)

SPLIT_ALIASES = {"mini_train": "train", "mini_val": "val"}


class PrepareError(UserError, RuntimeError):
    """Bad input to the preparation (wrong dataroot or version, a damaged table); the message says what
    was expected and where."""


RESTORE = "restore the tables from the nuScenes download (or generate the synthetic set again)"


class TableRecord(dict):
    """A record of a nuScenes table (a plain dict) whose missing field is a :class:`PrepareError` naming
    the table file, the record's token and the field, instead of a bare ``KeyError``."""

    def __init__(self, table_file: Path, record: dict[str, Any], token: str = "", prefix: str = "") -> None:
        self.table_file, self.token, self.prefix = table_file, token or str(record.get("token", "?")), prefix
        super().__init__({key: TableRecord(table_file, value, self.token, f"{prefix}{key}.")
                          if isinstance(value, dict) else value for key, value in record.items()})

    def __missing__(self, key: str) -> Any:
        raise PrepareError(f"{self.table_file}: record {self.token} has no field '{self.prefix}{key}'; {RESTORE}")

    def path(self, dataroot: Path, key: str = "filename") -> Path:
        """The data file this record names under ``key``, refused when it leads outside ``dataroot``."""
        try:
            return join_inside(dataroot, self[key])
        except UnsafePathError:
            raise PrepareError(f"{self.table_file}: record {self.token}: {key} {self[key]!r} leads outside the "
                               f"dataroot {dataroot}; {RESTORE}") from None


def get_record(nusc: Any, table: str, token: str) -> TableRecord:
    """``nusc.get(table, token)`` as a :class:`TableRecord`; an unknown token is a :class:`PrepareError`."""
    table_file = Path(nusc.table_root) / f"{table}.json"
    try:
        return TableRecord(table_file, nusc.get(table, token))
    except KeyError:
        raise PrepareError(f"{table_file}: no record with token {token!r}, but another table refers to it; "
                           f"{RESTORE}") from None


def table_records(nusc: Any, table: str) -> list[TableRecord]:
    """Every record of a loaded table (``scene``, ``lidarseg``, ...) as :class:`TableRecord`s."""
    table_file = Path(nusc.table_root) / f"{table}.json"
    return [TableRecord(table_file, record) for record in getattr(nusc, table, [])]


def official_splits(version: str) -> dict[str, list[str]]:
    """Scene names per split (``train``/``val``/``test``) of a nuScenes version."""
    from nuscenes.utils.splits import create_splits_scenes

    wanted = {"v1.0-trainval": ("train", "val"), "v1.0-mini": ("mini_train", "mini_val"),
              "v1.0-test": ("test",)}[version]
    scenes = create_splits_scenes(verbose=False)
    return {SPLIT_ALIASES.get(name, name): list(scenes[name]) for name in wanted}


def validate_input(dataroot: Path, version: str) -> None:
    """Raise :class:`PrepareError` with what was expected where, before the devkit is touched."""
    if version not in NUSCENES_VERSIONS:
        raise PrepareError(f"unknown version '{version}': expected one of {', '.join(NUSCENES_VERSIONS)}")
    if not dataroot.is_dir():
        raise PrepareError(f"dataroot {dataroot} does not exist: expected the folder that holds "
                           f"{version}/, samples/ and maps/")
    table_dir = dataroot / version
    if not (table_dir / "scene.json").is_file():
        found = sorted(p.name for p in dataroot.glob("v1.0-*") if p.is_dir())
        hint = f" (found: {', '.join(found)})" if found else ""
        raise PrepareError(f"{table_dir} has no scene.json: expected the nuScenes tables of {version} "
                           f"there{hint}")


# --------------------------------------------------------------------------------------------
# Per-sample records
# --------------------------------------------------------------------------------------------
def _pose(record: dict[str, Any]) -> np.ndarray:
    return pose_matrix(record["translation"], record["rotation"])


def _check_point_file(path: Path) -> tuple[int, str | None]:
    """Number of points in a ``.pcd.bin`` and a problem description (None when fine)."""
    if not path.is_file():
        return 0, "missing"
    size = path.stat().st_size
    if size == 0 or size % (4 * POINT_COLUMNS):
        return 0, f"truncated ({size} bytes is not a multiple of {4 * POINT_COLUMNS})"
    return size // (4 * POINT_COLUMNS), None


def _check_image_file(path: Path, width: int, height: int) -> str | None:
    """A problem description of a JPEG (missing, unreadable header, wrong size, truncated) or None."""
    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as im:
            size = im.size
    except (OSError, ValueError) as exc:
        return f"unreadable ({exc.__class__.__name__})"
    if width and height and size != (width, height):
        return f"size {size[0]}x{size[1]} but the table says {width}x{height}"
    with open(path, "rb") as fh:  # a complete JPEG ends with the EOI marker
        fh.seek(-2, os.SEEK_END)
        if fh.read(2) != b"\xff\xd9":
            return "truncated (no JPEG end marker)"
    return None


def sweep_records(nusc: Any, lidar_sd: TableRecord, lidar2ego: np.ndarray, ego2global: np.ndarray,
                  problems: list[str]) -> list[dict[str, Any]]:
    """The info records of the LiDAR sweeps before the keyframe ``lidar_sd`` (its ``prev`` chain), nearest
    first, at most :data:`MAX_SWEEPS`; a missing or damaged sweep file ends the chain and is added to
    ``problems``.

    Args:
        lidar2ego, ego2global: ``(4, 4)`` of the keyframe's LiDAR (its calibration and ego pose).
    """
    root, sweeps, sd = Path(nusc.dataroot), [], lidar_sd
    while sd["prev"] and len(sweeps) < MAX_SWEEPS:
        sd = get_record(nusc, "sample_data", sd["prev"])
        num_points, problem = _check_point_file(sd.path(root))
        if problem:
            problems.append(f"{sd['filename']}: {problem}")
            break
        sweep_lidar2ego = _pose(get_record(nusc, "calibrated_sensor", sd["calibrated_sensor_token"]))
        sweep_ego2global = _pose(get_record(nusc, "ego_pose", sd["ego_pose_token"]))
        sweep2lidar = compose_lidar2cam(sweep_lidar2ego, sweep_ego2global, ego2global, lidar2ego)
        sweeps.append({"path": sd["filename"], "timestamp": sd["timestamp"], "num_points": num_points,
                       "sweep2lidar": sweep2lidar.tolist()})
    return sweeps


def sample_record(nusc: Any, sample: TableRecord, scene: TableRecord, conditions: list[str],
                  lidarseg: dict[str, TableRecord]) -> tuple[dict[str, Any] | None, list[str]]:
    """The info record of one keyframe and its file problems; the record is None if unusable.

    ``lidarseg`` maps a LiDAR sample_data token to its lidarseg record (empty without lidarseg).

    Raises:
        PrepareError: a table record lacks a field, refers to a missing record, or names a file
            outside the dataroot (one line naming the table file, the record and the field).
    """
    root = Path(nusc.dataroot)
    problems: list[str] = []
    lidar_sd = get_record(nusc, "sample_data", sample["data"]["LIDAR_TOP"])
    lidar_cs = get_record(nusc, "calibrated_sensor", lidar_sd["calibrated_sensor_token"])
    ego2global = _pose(get_record(nusc, "ego_pose", lidar_sd["ego_pose_token"]))
    lidar2ego = _pose(lidar_cs)
    num_points, problem = _check_point_file(lidar_sd.path(root))
    if problem:
        problems.append(f"{lidar_sd['filename']}: {problem}")
    label_record = lidarseg.get(lidar_sd["token"])
    lidarseg_path = label_record["filename"] if label_record else None
    label_problem = False
    if label_record:
        label_file = label_record.path(root)
        if not label_file.is_file():
            problems.append(f"{lidarseg_path}: missing")
            label_problem = True
        elif num_points and label_file.stat().st_size != num_points:
            problems.append(f"{lidarseg_path}: {label_file.stat().st_size} labels for {num_points} points")
            label_problem = True
    cameras = {}
    for channel, sd_token in sample["data"].items():
        sd = get_record(nusc, "sample_data", sd_token)
        if sd["sensor_modality"] != "camera":
            continue
        cs = get_record(nusc, "calibrated_sensor", sd["calibrated_sensor_token"])
        problem = _check_image_file(sd.path(root), sd["width"], sd["height"])
        if problem:
            problems.append(f"{sd['filename']}: {problem}")
            continue
        ego2global_cam = _pose(get_record(nusc, "ego_pose", sd["ego_pose_token"]))
        lidar2cam = compose_lidar2cam(lidar2ego, ego2global, ego2global_cam, _pose(cs))
        cameras[channel] = {"path": sd["filename"], "width": sd["width"], "height": sd["height"],
                            "K": np.asarray(cs["camera_intrinsic"], dtype=np.float64).tolist(),
                            "lidar2cam": lidar2cam.tolist(), "timestamp": sd["timestamp"]}
    if not num_points or not cameras or label_problem:
        return None, problems
    record = {"token": sample["token"], "scene_name": scene["name"], "timestamp": sample["timestamp"],
              "conditions": conditions, "ego2global": ego2global.tolist(),
              "lidar": {"path": lidar_sd["filename"], "lidarseg_path": lidarseg_path, "num_points": num_points,
                        "lidar2ego": lidar2ego.tolist(),
                        "sweeps": sweep_records(nusc, lidar_sd, lidar2ego, ego2global, problems)},
              "cameras": cameras}
    return record, problems


# --------------------------------------------------------------------------------------------
# Scenes, workers, resume
# --------------------------------------------------------------------------------------------
_NUSC: Any = None  # set in the parent before forking; workers inherit it copy-on-write
_LIDARSEG: dict[str, TableRecord] = {}  # LiDAR sample_data token -> its lidarseg record


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` via a temporary file and ``os.replace``: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, separators=(",", ":")))
    os.replace(tmp, path)


def _prepare_scene(args: tuple[str, str, str]) -> tuple[str, int]:
    """Worker: records of one scene -> ``parts/<split>/<scene>.json``. Returns (scene, #samples)."""
    scene_token, split, part_path = args
    nusc = _NUSC
    scene = get_record(nusc, "scene", scene_token)
    conditions = parse_conditions(scene["description"])
    records, problems, excluded = [], [], 0
    token = scene["first_sample_token"]
    while token:
        sample = get_record(nusc, "sample", token)
        record, sample_problems = sample_record(nusc, sample, scene, conditions, _LIDARSEG)
        problems += sample_problems
        if record is None:
            excluded += 1
        else:
            records.append(record)
        token = sample["next"]
    write_json_atomic(Path(part_path), {"schema_version": SCHEMA_VERSION, "scene": scene["name"], "split": split,
                                        "conditions": conditions, "samples": records, "excluded": excluded,
                                        "problems": list(dict.fromkeys(problems))})  # a keyframe is also a sweep
    return scene["name"], len(records)


@dataclass
class PrepareSummary:
    """What a preparation produced; also written to ``summary.json``."""

    version: str
    samples: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> condition tag -> count
    totals: dict[str, int] = field(default_factory=dict)               # split -> samples (a night+rain
                                                                       # sample counts once here)
    excluded: dict[str, int] = field(default_factory=dict)             # split -> samples left out
    problems: list[str] = field(default_factory=list)                  # "file: what is wrong"
    skipped: bool = False                                              # already complete: nothing done

    def to_text(self) -> str:
        """A human-readable multi-line summary."""
        lines = [f"nuScenes {self.version}: prepared" + (" (already complete, nothing to do)" if self.skipped else "")]
        for split, counts in self.samples.items():
            per_cond = ", ".join(f"{c} {n}" for c, n in sorted(counts.items()))
            lines.append(f"  {split}: {self.totals.get(split, 0)} samples (by tag: {per_cond}); "
                         f"excluded {self.excluded.get(split, 0)}")
        lines.append(f"  files missing or corrupt: {len(self.problems)}")
        lines += [f"    {p}" for p in self.problems[:20]]
        if len(self.problems) > 20:
            lines.append(f"    ... and {len(self.problems) - 20} more (see summary.json)")
        return "\n".join(lines)


def _devkit_version() -> str:
    try:
        return metadata.version("nuscenes-devkit")
    except metadata.PackageNotFoundError:
        return "unknown"


def prepare(dataroot: Path, version: str, out: Path, workers: int = 2, overwrite: bool = False,
            progress: bool = True) -> PrepareSummary:
    """Write the info files of every split of ``version`` to ``out`` (resumable, atomic)."""
    global _NUSC, _LIDARSEG
    dataroot, out = Path(dataroot).resolve(), Path(out)
    validate_input(dataroot, version)
    splits = official_splits(version)
    summary_path = out / "summary.json"
    if overwrite and out.exists():
        shutil.rmtree(out / "parts", ignore_errors=True)
        summary_path.unlink(missing_ok=True)
    elif summary_path.is_file():
        done = _read_json(summary_path)
        if (done.get("version"), done.get("dataroot"), done.get("schema_version")) == (
                version, str(dataroot), SCHEMA_VERSION) and all(
                (out / f"infos_{s}.json").is_file() and (store_path(out, s) / META_FILE).is_file() for s in splits):
            return PrepareSummary(version, done["samples"], done["totals"], done["excluded"], done["problems"],
                                  skipped=True)
    from nuscenes.nuscenes import NuScenes

    try:
        _NUSC = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    except (AssertionError, KeyError, IndexError, FileNotFoundError, json.JSONDecodeError) as exc:
        raise PrepareError(_table_problem(dataroot / version, exc)) from None
    _LIDARSEG = {r["sample_data_token"]: r for r in table_records(_NUSC, "lidarseg")}
    by_name = {s["name"]: s["token"] for s in table_records(_NUSC, "scene")}
    jobs = [(by_name[name], split, str(out / "parts" / safe_name(split) / f"{safe_name(name)}.json"))
            for split, names in splits.items() for name in names if name in by_name]
    if not jobs:
        raise PrepareError(f"no scene of {dataroot / version} is in the official {version} split lists "
                           f"(scene names must come from nuscenes.utils.splits)")
    todo = [job for job in jobs if not _part_done(Path(job[2]))]
    log.info("%d scenes, %d already prepared, %d to do with %d worker(s)", len(jobs), len(jobs) - len(todo),
             len(todo), workers)
    _run_jobs(todo, workers, progress)
    summary = _merge(out, version, dataroot, splits, jobs)
    _NUSC, _LIDARSEG = None, {}
    return summary


def _read_json(path: Path) -> Any:
    """A JSON file this module wrote (summary, per-scene part); damaged is a :class:`PrepareError` naming it."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PrepareError(f"{path}: cannot be read ({exc.__class__.__name__}: {exc}); delete it to prepare that "
                           "part again, or pass --overwrite") from None


def _part_done(path: Path) -> bool:
    """Whether a scene's part is written, by this schema version (a part of an older one is prepared again)."""
    return path.is_file() and _read_json(path).get("schema_version") == SCHEMA_VERSION


def _table_problem(table_dir: Path, exc: Exception) -> str:
    """One line naming the table file (and record) behind the devkit's failure to load ``table_dir``.

    Only on the error path: the tables are read again, one by one, to find the culprit."""
    key = exc.args[0] if isinstance(exc, KeyError) and exc.args else None
    for path in sorted(table_dir.glob("*.json")):
        try:
            records = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            return f"{path}: not a readable JSON table ({err.__class__.__name__}: {err}); {RESTORE}"
        if key is not None and isinstance(records, list) and any(key in r for r in records if isinstance(r, dict)):
            lacking = next((r for r in records if isinstance(r, dict) and key not in r), None)
            if lacking is not None:
                return f"{path}: record {lacking.get('token', '?')} has no field '{key}'; {RESTORE}"
    return (f"the devkit could not load the tables in {table_dir} ({exc.__class__.__name__}: {exc}); a record "
            f"lacks a field or refers to a missing record; {RESTORE}")


def _run_jobs(todo: list[tuple[str, str, str]], workers: int, progress: bool) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="prepare", unit="scene", disable=not progress)
    if workers <= 1 or len(todo) <= 1:
        for job in todo:
            _prepare_scene(job)
            bar.update()
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            for _ in pool.imap_unordered(_prepare_scene, todo):
                bar.update()
    bar.close()


def _merge(out: Path, version: str, dataroot: Path, splits: dict[str, list[str]],
           jobs: list[tuple[str, str, str]]) -> PrepareSummary:
    summary = PrepareSummary(version)
    for split in splits:
        records, counts, excluded = [], Counter(), 0
        for _, job_split, part_path in jobs:
            if job_split != split:
                continue
            part = _read_json(Path(part_path))
            records += part["samples"]
            excluded += part["excluded"]
            summary.problems += part["problems"]
            for rec in part["samples"]:
                counts.update(rec["conditions"])
        info = {"schema_version": SCHEMA_VERSION, "devkit_version": _devkit_version(), "nuscenes_version": version,
                "split": split, "dataroot": str(dataroot), "samples": records}
        write_info_store(store_path(out, split), info)
        write_json_atomic(out / f"infos_{split}.json", info)
        summary.samples[split] = dict(counts)
        summary.totals[split] = len(records)
        summary.excluded[split] = excluded
    write_json_atomic(out / "summary.json", {"version": version, "dataroot": str(dataroot),
                                             "schema_version": SCHEMA_VERSION,
                                             "samples": summary.samples, "totals": summary.totals,
                                             "excluded": summary.excluded,
                                             "problems": summary.problems})
    return summary
