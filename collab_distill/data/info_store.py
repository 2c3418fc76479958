"""The info store: a split's info records as arrays on disk, read row by row; what training reads.

``tools/prepare_nuscenes.py`` writes, per split, ``infos_<split>.json`` (the export for humans, the
check and the restoration data; read by :func:`collab_distill.data.infos.load_infos`) and, from the
same records, the folder ``infos_<split>/`` read here. Parsing the JSON costs about 20 KB of Python
objects per keyframe (566 MB for the 28,130 nuScenes train keyframes) in every process that reads
it: each rank and each DataLoader worker. The store's arrays are not loaded: only their headers are
read at open, a :class:`SampleInfo` is built when asked for from its rows, read with ``os.pread``
(:class:`collab_distill.data.rows.RowFile`, no memory map), and all processes share the file pages
through the page cache without any of them keeping them mapped. Layout (``N`` samples, ``S`` camera slots, ``T`` condition tags, ``W``
sweep slots: the most previous sweeps a record of the split has, at most ``MAX_SWEEPS``)::

    infos_<split>/timestamp.npy         (N,) int64           keyframe timestamp (us)
                  ego2global.npy        (N, 4, 4) float64    ego pose at LiDAR time
                  lidar2ego.npy         (N, 4, 4) float64
                  num_points.npy        (N,) int64
                  conditions.npy        (N, T) uint8         multi-hot over meta["conditions"]
                  camera_present.npy    (N, S) bool          slot s over meta["cameras"]
                  camera_K.npy          (N, S, 3, 3) float64 (zeros where absent)
                  camera_lidar2cam.npy  (N, S, 4, 4) float64
                  camera_size.npy       (N, S, 2) int32      width, height
                  camera_timestamp.npy  (N, S) int64
                  sweep_present.npy     (N, W) bool          previous sweep w (0 = nearest) recorded
                  sweep2lidar.npy       (N, W, 4, 4) float64 (zeros where absent)
                  sweep_timestamp.npy   (N, W) int64
                  sweep_num_points.npy  (N, W) int64
                  strings.npy           (B,) uint8           every string, UTF-8, back to back
                  string_offsets.npy    (N * (4 + S + W) + 1,) int64; sample i's strings are rows
                                        i * (4 + S + W) ...: token, scene_name, lidar_path, lidarseg_path
                                        ("" = none), then the image path of each slot ("" = absent),
                                        then the path of each sweep slot ("" = absent)
                  meta.json             versions, split, dataroot, N, cameras, sweeps (W), conditions, and
                                        the shape, dtype and byte size of every array; written last

``meta["cameras"]`` is :data:`CAMERA_ORDER` followed by any other channel of the split (sorted).
Condition tags come back in :data:`CONDITION_TAGS` order. No pickle anywhere
(``allow_pickle=False``); the folder is written beside the final one and renamed into place, so a
store is either complete or absent, and one cut short later (a truncated array) is refused.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from collab_distill.data.conditions import CONDITION_TAGS
from collab_distill.data.infos import CAMERA_ORDER, SCHEMA_VERSION, CameraInfo, InfoFileError, SampleInfo, SweepInfo
from collab_distill.data.rows import RowFile
from collab_distill.paths import replace_folder

STORE_VERSION = 2  # 2: previous LiDAR sweeps
META_FILE = "meta.json"
STRING_FIELDS = ("token", "scene_name", "lidar_path", "lidarseg_path")  # then one path per camera and sweep slot
REDO = "run tools/prepare_nuscenes.py again with --overwrite"


def store_path(info_dir: str | Path, split: str) -> Path:
    """The store folder of ``split`` in a prepared folder: ``<info_dir>/infos_<split>``."""
    return Path(info_dir) / f"infos_{split}"


def _layout(n: int, slots: int, tags: int, sweeps: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every fixed-size array of a store (``strings.npy`` is sized by its content)."""
    f64, i64 = np.dtype(np.float64), np.dtype(np.int64)
    return {"timestamp": ((n,), i64), "ego2global": ((n, 4, 4), f64), "lidar2ego": ((n, 4, 4), f64),
            "num_points": ((n,), i64), "conditions": ((n, tags), np.dtype(np.uint8)),
            "camera_present": ((n, slots), np.dtype(bool)), "camera_K": ((n, slots, 3, 3), f64),
            "camera_lidar2cam": ((n, slots, 4, 4), f64), "camera_size": ((n, slots, 2), np.dtype(np.int32)),
            "camera_timestamp": ((n, slots), i64), "sweep_present": ((n, sweeps), np.dtype(bool)),
            "sweep2lidar": ((n, sweeps, 4, 4), f64), "sweep_timestamp": ((n, sweeps), i64),
            "sweep_num_points": ((n, sweeps), i64),
            "string_offsets": ((n * (len(STRING_FIELDS) + slots + sweeps) + 1,), i64)}


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def _arrays(records: Sequence[Mapping[str, Any]], cameras: Sequence[str], sweeps: int) -> dict[str, np.ndarray]:
    """The arrays of a store holding ``records`` (info-file records, see ``data_prep/nuscenes_infos.py``)
    with ``sweeps`` sweep slots."""
    n, slot_of = len(records), {name: s for s, name in enumerate(cameras)}
    arrays = {name: np.zeros(shape, dtype) for name, (shape, dtype) in
              _layout(n, len(cameras), len(CONDITION_TAGS), sweeps).items() if name != "string_offsets"}
    strings: list[str] = []
    for i, rec in enumerate(records):
        unknown = set(rec["conditions"]) - set(CONDITION_TAGS)
        if unknown:
            raise ValueError(f"record {rec['token']}: condition tags {sorted(unknown)} are not in {CONDITION_TAGS}")
        arrays["conditions"][i] = [tag in rec["conditions"] for tag in CONDITION_TAGS]
        lidar, paths = rec["lidar"], [""] * len(cameras)
        arrays["timestamp"][i], arrays["num_points"][i] = rec["timestamp"], lidar["num_points"]
        arrays["ego2global"][i], arrays["lidar2ego"][i] = rec["ego2global"], lidar["lidar2ego"]
        for channel, cam in rec["cameras"].items():
            s = slot_of[channel]
            arrays["camera_present"][i, s] = True
            arrays["camera_K"][i, s], arrays["camera_lidar2cam"][i, s] = cam["K"], cam["lidar2cam"]
            arrays["camera_size"][i, s] = cam["width"], cam["height"]
            arrays["camera_timestamp"][i, s] = cam["timestamp"]
            paths[s] = cam["path"]
        sweep_paths = [""] * sweeps
        for w, sweep in enumerate(lidar["sweeps"]):
            arrays["sweep_present"][i, w], arrays["sweep2lidar"][i, w] = True, sweep["sweep2lidar"]
            arrays["sweep_timestamp"][i, w], arrays["sweep_num_points"][i, w] = sweep["timestamp"], sweep["num_points"]
            sweep_paths[w] = sweep["path"]
        strings += [rec["token"], rec["scene_name"], lidar["path"], lidar["lidarseg_path"] or "", *paths, *sweep_paths]
    encoded = [text.encode("utf-8") for text in strings]
    arrays["string_offsets"] = np.concatenate([[0], np.cumsum([len(b) for b in encoded], dtype=np.int64)])
    arrays["strings"] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    return arrays


def write_info_store(path: str | Path, info: Mapping[str, Any]) -> None:
    """Write the store of one info file's content to the folder ``path`` (replacing it), atomically.

    Args:
        path: the store folder, normally :func:`store_path` of the split.
        info: the info-file dict as written to ``infos_<split>.json`` (``schema_version``,
            ``devkit_version``, ``nuscenes_version``, ``split``, ``dataroot``, ``samples``).

    Raises:
        ValueError: a record with a condition tag outside :data:`CONDITION_TAGS`.
    """
    path = Path(path)
    records = info["samples"]
    channels = {channel for rec in records for channel in rec["cameras"]}
    cameras = [*CAMERA_ORDER, *sorted(channels - set(CAMERA_ORDER))]
    sweeps = max((len(rec["lidar"]["sweeps"]) for rec in records), default=0)
    arrays = _arrays(records, cameras, sweeps)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    entries = {}
    for name, array in arrays.items():
        np.save(tmp / f"{name}.npy", array, allow_pickle=False)
        entries[name] = {"shape": list(array.shape), "dtype": array.dtype.str,
                         "bytes": (tmp / f"{name}.npy").stat().st_size}
    meta = {"store_version": STORE_VERSION, "schema_version": info["schema_version"],
            "devkit_version": info["devkit_version"], "nuscenes_version": info["nuscenes_version"],
            "split": info["split"], "dataroot": info["dataroot"], "num_samples": len(records), "cameras": cameras,
            "sweeps": sweeps, "conditions": list(CONDITION_TAGS), "arrays": entries}
    (tmp / META_FILE).write_text(json.dumps(meta, indent=1))  # last: a store without it is incomplete
    replace_folder(tmp, path)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
class InfoStore:
    """A split's info records, read row by row with ``os.pread``: O(1) memory per process, whatever the
    size (the file pages stay in the shared page cache; nothing is mapped, so a process's PSS/RSS does
    not grow as it reads the samples).

    Pickling keeps only the folder and the dataroot override (the arrays are opened again, by path,
    in the process that unpickles it: a DataLoader worker started with ``spawn``); after ``fork``
    the inherited descriptors are safe to share (``pread`` has no file position).

    Args:
        path: the store folder (:func:`store_path`).
        dataroot: where the nuScenes files are; defaults to the dataroot recorded at preparation.

    Raises:
        InfoFileError: the store is missing, incomplete, damaged (an array of another size, shape or
            type than its ``meta.json`` records) or of another version than this code reads.
    """

    def __init__(self, path: str | Path, dataroot: str | Path | None = None) -> None:
        self.path = Path(path)
        self._dataroot_override = dataroot
        meta = self._read_meta()
        self.nuscenes_version: str = meta["nuscenes_version"]
        self.devkit_version: str = meta["devkit_version"]
        self.split: str = meta["split"]
        self.dataroot = Path(dataroot) if dataroot else Path(meta["dataroot"])
        self.cameras: tuple[str, ...] = tuple(meta["cameras"])
        self.sweeps = int(meta["sweeps"])  # sweep slots W
        self._arrays = self._open(meta)
        self._width = len(STRING_FIELDS) + len(self.cameras) + self.sweeps

    def _read_meta(self) -> dict[str, Any]:
        meta_path = self.path / META_FILE
        if not meta_path.is_file():
            raise InfoFileError(f"{meta_path}: info store not found or not completely written; {REDO}")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InfoFileError(f"{meta_path}: unreadable ({exc.__class__.__name__}); {REDO}") from None
        found = (meta.get("store_version"), meta.get("schema_version"), meta.get("conditions")) \
            if isinstance(meta, dict) else None
        if found != (STORE_VERSION, SCHEMA_VERSION, list(CONDITION_TAGS)):
            raise InfoFileError(f"{meta_path}: store version, schema version and condition tags {found}, this code "
                                f"reads {(STORE_VERSION, SCHEMA_VERSION, list(CONDITION_TAGS))}; {REDO}")
        return meta

    def _open(self, meta: dict[str, Any]) -> dict[str, RowFile]:
        """A row reader of every array after checking it against ``meta`` (sizes and headers; no data read)."""
        try:
            entries, n = meta["arrays"], int(meta["num_samples"])
            expected = {name: (list(shape), dtype.str) for name, (shape, dtype) in
                        _layout(n, len(self.cameras), len(CONDITION_TAGS), self.sweeps).items()}
            expected["strings"] = ([entries["strings"]["shape"][0]], np.dtype(np.uint8).str)
            recorded = {name: (entries[name]["shape"], entries[name]["dtype"], int(entries[name]["bytes"]))
                        for name in expected}
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise InfoFileError(f"{self.path / META_FILE}: malformed ({exc.__class__.__name__}: {exc}); {REDO}") \
                from None
        arrays = {}
        for name, (shape, dtype) in expected.items():
            file, (*header, num_bytes) = self.path / f"{name}.npy", recorded[name]
            size = file.stat().st_size if file.is_file() else None
            if header != [shape, dtype] or size != num_bytes:
                raise InfoFileError(f"{file}: {'missing' if size is None else f'{size} bytes'}, expected {num_bytes} "
                                    f"bytes of {dtype} {tuple(shape)} ({META_FILE}); {REDO}")
            try:
                array = RowFile.npy(file)
            except (OSError, ValueError) as exc:
                raise InfoFileError(f"{file}: not a readable array ({exc}); {REDO}") from None
            if list(array.shape) != shape or array.dtype.str != dtype:
                raise InfoFileError(f"{file}: holds {array.dtype.str} {array.shape}, {META_FILE} records {dtype} "
                                    f"{tuple(shape)}; {REDO}")
            if array.end != size:
                raise InfoFileError(f"{file}: {size} bytes, its header needs {array.end} for {dtype} {tuple(shape)}; "
                                    f"{REDO}")
            arrays[name] = array
        return arrays

    def close(self) -> None:
        """Close the array files (reading again opens them again)."""
        for array in getattr(self, "_arrays", {}).values():
            array.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "dataroot": self._dataroot_override}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["dataroot"])  # type: ignore[misc]

    def __len__(self) -> int:
        return self._arrays["timestamp"].rows

    def sample(self, index: int) -> SampleInfo:
        """The record of sample ``index`` (``0 <= index < len(self)``), built from its rows (read with ``pread``)."""
        i = int(index)
        if not 0 <= i < len(self):
            raise IndexError(f"{self.path}: sample {i} of {len(self)}")
        a = {name: array.row(i) for name, array in self._arrays.items() if name not in ("strings", "string_offsets")}
        offsets = self._arrays["string_offsets"].read(i * self._width, (i + 1) * self._width + 1)
        text = self._arrays["strings"].read(int(offsets[0]), int(offsets[-1])).tobytes()
        ends = (offsets - offsets[0]).tolist()
        token, scene, lidar, lidarseg, *paths = (text[s:e].decode("utf-8") for s, e in zip(ends[:-1], ends[1:]))
        paths, sweep_paths = paths[:len(self.cameras)], paths[len(self.cameras):]
        cameras = {channel: CameraInfo(paths[s], int(a["camera_size"][s, 0]), int(a["camera_size"][s, 1]),
                                       a["camera_K"][s].copy(), a["camera_lidar2cam"][s].copy(),
                                       int(a["camera_timestamp"][s]))
                   for s, channel in enumerate(self.cameras) if a["camera_present"][s]}
        sweeps = tuple(SweepInfo(sweep_paths[w], int(a["sweep_timestamp"][w]), int(a["sweep_num_points"][w]),
                                 a["sweep2lidar"][w].copy())
                       for w in range(self.sweeps) if a["sweep_present"][w])
        conditions = tuple(tag for tag, hot in zip(CONDITION_TAGS, a["conditions"]) if hot)
        return SampleInfo(token, scene, int(a["timestamp"]), conditions, a["ego2global"], lidar,
                          lidarseg or None, int(a["num_points"]), a["lidar2ego"], cameras, sweeps)

    def select(self, conditions: Iterable[str] | None) -> np.ndarray:
        """``(K,)`` int64 indices of the samples with at least one of ``conditions``, ascending (all
        samples when None or it contains ``all``); as :meth:`InfoFile.filter`, vectorised (reads the
        ``(N, T)`` uint8 conditions once into a temporary)."""
        wanted = None if conditions is None else set(conditions)
        if wanted is None or "all" in wanted:
            return np.arange(len(self), dtype=np.int64)
        columns = [c for c, tag in enumerate(CONDITION_TAGS) if tag in wanted]
        return np.flatnonzero(self._arrays["conditions"].all()[:, columns].any(axis=1)).astype(np.int64)

    def cameras_present(self, indices: Sequence[int]) -> np.ndarray:
        """``(K, S)`` bool: which of the :attr:`cameras` slots samples ``indices`` have (read into a temporary)."""
        return self._arrays["camera_present"].all()[np.asarray(indices, dtype=np.int64)]

    def present_conditions(self) -> tuple[str, ...]:
        """The condition tags at least one sample has, in :data:`CONDITION_TAGS` order."""
        hot = self._arrays["conditions"].all().any(axis=0)
        return tuple(tag for tag, has in zip(CONDITION_TAGS, hot) if has)


class InfoSelection(Sequence[SampleInfo]):
    """The samples of a store with some condition tags: a sequence of :class:`SampleInfo` built on
    access, holding only ``indices (K,) int64`` (not even those when pickled: they are selected again).

    Args:
        store: the split's store.
        conditions: as :meth:`InfoStore.select`.
    """

    def __init__(self, store: InfoStore, conditions: Iterable[str] | None) -> None:
        self.store = store
        self.conditions = None if conditions is None else tuple(conditions)
        self.indices = store.select(self.conditions)

    def __getstate__(self) -> dict[str, Any]:
        return {"store": self.store, "conditions": self.conditions}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["store"], state["conditions"])  # type: ignore[misc]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> SampleInfo:  # type: ignore[override]
        """The ``index``-th selected sample (an int; negative counts from the end)."""
        return self.store.sample(self.indices[index])
