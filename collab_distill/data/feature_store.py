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
field. The files are those of :mod:`collab_distill.data.shards` (the one store mechanism). No pickle anywhere.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from collab_distill.data.info_store import InfoStore
from collab_distill.data.rows import RowFile
from collab_distill.data.shards import (
    Field,
    ShardedStore,
    StoreError,
    first_difference,
    sha256_file,
    short_value,
)

STORE_VERSION = 1
INDEX_FILE = "index.npy"
MAP_DTYPE = np.dtype(np.float16)
K_DTYPE = np.dtype(np.float64)
BUILD_HINT = "build a store for this run with tools/cache_teacher.py --config <the run's config>"
# the info-store arrays a stored map depends on: image paths and tokens (strings), which cameras, their K and size
INFO_FINGERPRINT_FILES = ("strings.npy", "string_offsets.npy", "camera_present.npy", "camera_K.npy",
                          "camera_size.npy")


class FeatureStoreError(StoreError):
    """A teacher-feature store that cannot serve this run: missing, incomplete, damaged, or built for
    another teacher, image size or data; the message names the field and what to do."""


def teacher_fields(map_shape: Sequence[int]) -> tuple[Field, Field]:
    """The store's fields: the ``(D, h, w)`` float16 maps and the float64 ``K`` of each row."""
    return (Field("maps", MAP_DTYPE.name, tuple(int(n) for n in map_shape), suffix=".f16"),
            Field("K", K_DTYPE.name, (3, 3), suffix="_K.f64"))


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


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
class FeatureStore(ShardedStore):
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

    WHAT, VERSION, HINT, ERROR = "teacher-feature store", STORE_VERSION, BUILD_HINT, FeatureStoreError

    def __init__(self, path: str | Path) -> None:
        self._index: RowFile | None = None
        super().__init__(path)

    def parse(self, meta: Mapping[str, Any]) -> None:
        self.map_shape: tuple[int, int, int] = tuple(int(n) for n in meta["map_shape"])
        self.cameras = [str(c) for c in meta["data"]["cameras"]]         # the info store's camera slots
        self.conditions = [str(c) for c in meta["data"]["conditions"]]   # the selection it was built for

    def fields(self, meta: Mapping[str, Any]) -> tuple[Field, Field]:
        return teacher_fields(self.map_shape)

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

    def close(self) -> None:
        """Close the store's files (reading again opens them again)."""
        super().close()
        index = getattr(self, "_index", None)
        if index is not None:
            index.close()

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
        return self.read("maps", self._rows(sample_index, slots))

    def intrinsics(self, sample_index: int, slots: Sequence[int]) -> np.ndarray:
        """``(M, 3, 3)`` float64 ``K`` of the images the :meth:`maps` were computed from (after the
        evaluation resize and centre crop)."""
        return self.read("K", self._rows(sample_index, slots))

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
