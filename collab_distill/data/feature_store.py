"""The teacher-feature store: the frozen teacher's patch maps of every (sample, camera), on disk.

Stage 1 distils a frozen teacher, so its patch map of each image is the same every epoch. The
store holds them once, in float16: stage 1 reads them in the DataLoader workers (row by row with
``os.pread``, :class:`collab_distill.data.rows.RowFile`, no memory map) instead of decoding JPEGs
and running the teacher, every rank and worker shares the pages through the page cache, and
nothing is kept per process. ``tools/cache_teacher.py`` builds it
(:mod:`collab_distill.engine.teacher_store`); this module only reads and writes the files (no model
code). Layout (``R`` rows = images, ``P`` processes of the build, ``N`` samples and ``S`` camera
slots of the info store, map ``(D, h, w)``)::

    <store>/meta.json          identity (teacher, image size, info store, selection), shapes,
                               ``complete`` (true once every shard is written)
            index.npy          (N, S) int64: the row of (sample, camera slot), -1 when not stored
            shard_<p>.f16      raw float16 (rows of process p, D, h, w): row r is in shard r % P at
                               position r // P; preallocated as a sparse file
            shard_<p>_K.f64    raw float64 (rows of process p, 3, 3): the ``K`` the map was computed
                               at (the evaluation transform: resize to cover, centre crop)
            shard_<p>.json     rows of shard p written so far (written after the data is flushed)

A build runs in ``.<store>.partial/`` beside the store and is renamed into place when complete, so
an existing store stays until its replacement is whole; a killed build resumes from the progress
files. A store is opened for a run only if its identity matches (:meth:`FeatureStore.check_teacher`,
:meth:`FeatureStore.check_data`): any difference is one :class:`FeatureStoreError` line naming the
field. No pickle anywhere.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from collab_distill.data.info_store import InfoStore
from collab_distill.data.rows import RowFile
from collab_distill.errors import UserError
from collab_distill.paths import replace_folder

STORE_VERSION = 1
META_FILE = "meta.json"
INDEX_FILE = "index.npy"
MAP_DTYPE = np.dtype(np.float16)
K_DTYPE = np.dtype(np.float64)
BUILD_HINT = "build a store for this run with tools/cache_teacher.py --config <the run's config>"
# the info-store arrays a stored map depends on: image paths and tokens (strings), which cameras, their K and size
INFO_FINGERPRINT_FILES = ("strings.npy", "string_offsets.npy", "camera_present.npy", "camera_K.npy",
                          "camera_size.npy")


class FeatureStoreError(UserError, ValueError):
    """A teacher-feature store that cannot serve this run: missing, incomplete, damaged, or built for
    another teacher, image size or data; the message names the field and what to do."""


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes (read in ``chunk``-byte pieces)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def info_fingerprint(info: InfoStore) -> dict[str, Any]:
    """What identifies the info store a feature store was built from: split, sample count and the sha256
    of the arrays the maps depend on (:data:`INFO_FINGERPRINT_FILES`: tokens, image paths, cameras, K, size)."""
    digest = hashlib.sha256()
    for name in INFO_FINGERPRINT_FILES:
        digest.update(name.encode())
        digest.update(sha256_file(info.path / name).encode())
    return {"split": info.split, "num_samples": len(info), "info_sha256": digest.hexdigest()}


def image_rows(info: InfoStore, selected: Sequence[int]) -> np.ndarray:
    """``(R, 2)`` int64 ``(sample index, camera slot)`` of every camera image of the ``selected``
    samples, in sample then slot order: the rows of a store."""
    selected = np.asarray(selected, dtype=np.int64)
    sample, slot = np.nonzero(info.cameras_present(selected))  # row-major: sample, then slot order
    return np.stack([selected[sample], slot], axis=1).astype(np.int64).reshape(-1, 2)


def shard_size(rows: int, processes: int, rank: int) -> int:
    """Rows held by shard ``rank`` when ``rows`` rows are dealt round-robin to ``processes`` shards."""
    return len(range(rank, rows, processes))


def partial_path(path: str | Path) -> Path:
    """The folder a build of the store ``path`` writes to until it is complete: ``.<name>.partial`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


def _write_json(path: Path, content: Mapping[str, Any]) -> None:
    """Write ``content`` as JSON to ``path`` atomically (a temporary file, fsynced, renamed)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(content, indent=1))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise FeatureStoreError(f"{path}: {what} not found; {BUILD_HINT}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FeatureStoreError(f"{path}: unreadable {what} ({exc.__class__.__name__}); {BUILD_HINT} "
                                "(--overwrite)") from None
    if not isinstance(content, dict):
        raise FeatureStoreError(f"{path}: not a {what}; {BUILD_HINT} (--overwrite)")
    return content


def _shard_files(folder: Path, rank: int) -> tuple[Path, Path, Path]:
    """Maps, K and progress file of shard ``rank``."""
    return folder / f"shard_{rank}.f16", folder / f"shard_{rank}_K.f64", folder / f"shard_{rank}.json"


def flatten(meta: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted keys: ``{"teacher": {"norm": False}}`` -> ``{"teacher.norm": False}``."""
    flat: dict[str, Any] = {}
    for key, value in meta.items():
        flat.update(flatten(value, f"{prefix}{key}.") if isinstance(value, Mapping) and value
                    else {f"{prefix}{key}": value})
    return flat


def first_difference(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> str | None:
    """The first key of ``wanted`` whose value differs in ``stored`` (compared as JSON values), or None."""
    for key, value in wanted.items():
        if json.loads(json.dumps(value)) != stored.get(key):
            return key
    return None


def short_value(value: Any) -> str:
    """A value for an error line: JSON, strings over 40 characters (hashes) cut to 16."""
    text = json.dumps(value, sort_keys=True)
    return text[:17] + '..."' if isinstance(value, str) and len(value) > 40 else text


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def begin_build(folder: Path, meta: Mapping[str, Any], index: np.ndarray) -> None:
    """Start a build in ``folder`` (a :func:`partial_path`): ``index.npy`` and ``meta.json`` with
    ``complete: false``; a folder already there is emptied first."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    tmp = folder / f".{INDEX_FILE}.tmp.npy"
    np.save(tmp, index, allow_pickle=False)
    os.replace(tmp, folder / INDEX_FILE)
    _write_json(folder / META_FILE, {**meta, "complete": False})


def read_build_meta(folder: Path) -> dict[str, Any] | None:
    """The ``meta.json`` of a build in progress in ``folder``, or None when there is none to resume
    (no folder, or one cut short before its meta was written)."""
    path = folder / META_FILE
    if not path.is_file():
        return None
    try:
        return _read_json(path, "build record")
    except FeatureStoreError:
        return None


class ShardWriter:
    """The shard of one build process: maps and ``K`` as writable memory maps (sparse files made at
    their full size), and how many of its rows are written.

    Args:
        folder: the build folder.
        rank, processes: this process and how many write the store.
        rows: rows of the whole store.
        map_shape: ``(D, h, w)`` of one map.
    """

    def __init__(self, folder: Path, rank: int, processes: int, rows: int, map_shape: tuple[int, int, int]) -> None:
        self.size = shard_size(rows, processes, rank)
        maps_file, k_file, self.progress_file = _shard_files(folder, rank)
        self.maps = self._map(maps_file, MAP_DTYPE, (self.size, *map_shape))
        self.K = self._map(k_file, K_DTYPE, (self.size, 3, 3))
        done = _read_json(self.progress_file, "progress") if self.progress_file.is_file() else {"rows": 0}
        self.done = int(done.get("rows", 0))

    @staticmethod
    def _map(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.memmap | np.ndarray:
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if not path.is_file() or path.stat().st_size != nbytes:
            with open(path, "wb") as f:
                f.truncate(nbytes)   # sparse: no block is allocated until it is written
        return np.memmap(path, dtype=dtype, mode="r+", shape=shape) if nbytes else np.zeros(shape, dtype)

    def write(self, maps: np.ndarray, K: np.ndarray) -> None:
        """Write the next ``len(maps)`` rows: ``maps (B, D, h, w)`` (cast to float16), ``K (B, 3, 3)``.
        They count as done after :meth:`commit`."""
        end = self.done + len(maps)
        self.maps[self.done:end] = maps
        self.K[self.done:end] = K
        self.done = end

    def commit(self) -> None:
        """Flush the written rows to disk, then record them in the progress file (atomically)."""
        for array in (self.maps, self.K):
            if isinstance(array, np.memmap):
                array.flush()
        _write_json(self.progress_file, {"rows": self.done})


def finish_build(folder: Path, path: Path) -> None:
    """Mark the build in ``folder`` complete and move it to ``path``; a store already at ``path`` is
    removed only after the new one is in place.

    Raises:
        FeatureStoreError: a shard has fewer rows written than it holds.
    """
    meta = _read_json(folder / META_FILE, "build record")
    for rank in range(meta["processes"]):
        done = _read_json(_shard_files(folder, rank)[2], "progress").get("rows")
        if done != shard_size(meta["rows"], meta["processes"], rank):
            raise FeatureStoreError(f"{folder}: shard {rank} has {done} of "
                                    f"{shard_size(meta['rows'], meta['processes'], rank)} rows; run the build again")
    _write_json(folder / META_FILE, {**meta, "complete": True})
    replace_folder(folder, path)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
class FeatureStore:
    """A complete teacher-feature store (nothing is read at open).

    Rows are read with ``os.pread`` into a fresh array (:class:`~collab_distill.data.rows.RowFile`), not
    through a memory map: the file pages stay
    in the kernel's page cache, shared by every rank and worker, and never count in a process's own
    memory (a memory map would keep every page it touched mapped, so a worker's PSS/RSS would climb
    towards the store's size over an epoch). Pickles by path: a DataLoader worker started with
    ``spawn`` opens the files again; ``pread`` reads at an offset, so descriptors inherited by a
    forked worker are safe to share.

    Args:
        path: the store folder (``method.teacher_store``).

    Raises:
        FeatureStoreError: the store is missing, incomplete (a build not finished), of another version,
            or a file has another size than its ``meta.json`` says.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta = _read_json(self.path / META_FILE, "teacher-feature store")
        if meta.get("store_version") != STORE_VERSION:
            raise FeatureStoreError(f"{self.path / META_FILE}: store version {meta.get('store_version')!r}, this "
                                    f"code reads {STORE_VERSION}; {BUILD_HINT} (--overwrite)")
        if meta.get("complete") is not True:
            raise FeatureStoreError(f"{self.path}: incomplete teacher-feature store (its build did not finish); run "
                                    "tools/cache_teacher.py again to resume it")
        self.meta = meta
        try:
            self.rows, self.processes = int(meta["rows"]), int(meta["processes"])
            self.map_shape: tuple[int, int, int] = tuple(int(n) for n in meta["map_shape"])
            self.cameras = [str(c) for c in meta["data"]["cameras"]]         # the info store's camera slots
            self.conditions = [str(c) for c in meta["data"]["conditions"]]   # the selection it was built for
        except (KeyError, TypeError, ValueError) as exc:
            raise FeatureStoreError(f"{self.path / META_FILE}: malformed ({exc.__class__.__name__}: {exc}); "
                                    f"{BUILD_HINT} (--overwrite)") from None
        self._index: RowFile | None = None
        self._shards: list[tuple[RowFile, RowFile]] | None = None   # per shard: maps and K rows
        self._check_sizes()

    def _check_sizes(self) -> None:
        map_bytes = int(np.prod(self.map_shape)) * MAP_DTYPE.itemsize
        for rank in range(self.processes):
            size = shard_size(self.rows, self.processes, rank)
            for file, nbytes in zip(_shard_files(self.path, rank)[:2], (map_bytes, 9 * K_DTYPE.itemsize)):
                found = file.stat().st_size if file.is_file() else None
                if found != size * nbytes:
                    raise FeatureStoreError(f"{file}: {'missing' if found is None else f'{found} bytes'}, expected "
                                            f"{size * nbytes} ({META_FILE}); {BUILD_HINT} (--overwrite)")

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def _index_rows(self) -> RowFile:
        if self._index is None:
            try:
                self._index = RowFile.npy(self.path / INDEX_FILE)
            except (OSError, ValueError) as exc:
                raise FeatureStoreError(f"{self.path / INDEX_FILE}: not a readable array ({exc}); {BUILD_HINT} "
                                        "(--overwrite)") from None
        return self._index

    @property
    def index(self) -> np.ndarray:
        """``(N, S)`` int64 row of each (info-store sample, camera slot), -1 when not stored (read from the
        file on each access into a fresh array, not kept; per sample, :meth:`maps` reads one row)."""
        return self._index_rows().all()

    def _files(self, rank: int) -> tuple[RowFile, RowFile]:
        """Row readers of shard ``rank``'s maps and ``K`` files (descriptors opened on first read)."""
        if self._shards is None:
            self._shards = []
            for p in range(self.processes):
                (maps, k, _), rows = _shard_files(self.path, p), shard_size(self.rows, self.processes, p)
                self._shards.append((RowFile(maps, MAP_DTYPE, self.map_shape, rows=rows),
                                     RowFile(k, K_DTYPE, (3, 3), rows=rows)))
        return self._shards[rank]

    def close(self) -> None:
        """Close the store's files (reading again opens them again)."""
        for files in getattr(self, "_shards", None) or ():  # also when __init__ stopped before opening any
            for file in files:
                file.close()
        index = getattr(self, "_index", None)
        if index is not None:
            index.close()

    def __del__(self) -> None:
        self.close()

    def _read(self, rows: Sequence[int], which: int) -> np.ndarray:
        """``(len(rows), *row shape)``: the stored rows from the maps (``which`` 0) or ``K`` (1) files."""
        files = [self._files(rank)[which] for rank in range(self.processes)]
        out = np.empty((len(rows), *files[0].row_shape), files[0].dtype)
        for i, row in enumerate(rows):
            rank, position = row % self.processes, row // self.processes
            try:
                out[i] = files[rank].row(position)
            except (EOFError, IndexError) as exc:
                raise FeatureStoreError(f"{exc}; {BUILD_HINT} (--overwrite)") from None
        return out

    def _rows(self, sample_index: int, slots: Sequence[int]) -> list[int]:
        rows = [int(r) for r in self._index_rows().row(int(sample_index))[list(slots)]]
        if min(rows, default=0) < 0:
            missing = [self.cameras[s] for s, r in zip(slots, rows) if r < 0]
            raise FeatureStoreError(f"{self.path}: sample {sample_index} of the info store has no stored map for "
                                    f"{missing} (the store holds conditions {self.conditions}); "
                                    f"{BUILD_HINT}")
        return rows

    def maps(self, sample_index: int, slots: Sequence[int]) -> np.ndarray:
        """``(M, D, h, w)`` float16 teacher patch maps of info-store sample ``sample_index`` at camera
        ``slots`` (indices into the info store's cameras), a copy."""
        return self._read(self._rows(sample_index, slots), 0)

    def intrinsics(self, sample_index: int, slots: Sequence[int]) -> np.ndarray:
        """``(M, 3, 3)`` float64 ``K`` of the images the :meth:`maps` were computed from (after the
        evaluation resize and centre crop)."""
        return self._read(self._rows(sample_index, slots), 1)

    def check_teacher(self, identity: Mapping[str, Any]) -> None:
        """Refuse a store of another teacher: ``identity`` (architecture, weights sha256, image size,
        block, ...) must equal the stored one field by field.

        Raises:
            FeatureStoreError: one line naming the first differing field and both values.
        """
        self._check("teacher", identity)

    def check_data(self, image_size: Sequence[int], info: InfoStore, selected: np.ndarray) -> None:
        """Refuse a store of another image size or info store, or one that lacks a ``selected`` sample
        (indices into ``info``).

        Raises:
            FeatureStoreError: one line naming the field, both values and what to do.
        """
        self._check("teacher", {"image_size": list(image_size)})
        self._check("data", {**info_fingerprint(info), "cameras": list(info.cameras)})
        stored = (self.index[selected] >= 0).any(axis=1) if len(selected) else np.zeros(0, bool)  # once; dropped
        if not stored.all():
            raise FeatureStoreError(f"{self.path}: {int((~stored).sum())} of the run's {len(selected)} samples are "
                                    f"not in the store (built for conditions {self.conditions}); "
                                    f"{BUILD_HINT}")

    def _check(self, section: str, wanted: Mapping[str, Any]) -> None:
        stored = self.meta.get(section, {})
        key = first_difference(stored, wanted)
        if key is not None:
            raise FeatureStoreError(f"{self.path}: {section} {key} is {short_value(stored.get(key))} in the store, "
                                    f"{short_value(wanted[key])} for this run; {BUILD_HINT} (or point "
                                    "method.teacher_store at one)")
