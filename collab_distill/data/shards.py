"""Sharded row stores: the one on-disk mechanism of every store of precomputed features.

A store holds ``R`` rows of named fields (:class:`Field`), written by ``P`` processes (the ranks of an
``accelerate launch``, or one): row ``r`` lives in shard ``r % P`` at position ``r // P``. A field is
either *fixed* (every row has the same shape: a raw C-order file per shard, preallocated as a sparse
file and written with ``os.pwrite``) or *ragged* (row ``r`` has ``n_r`` elements of one shape: the
elements appended to a values file, and the end offset of each row in a fixed ``int64`` file). Rows
are read with ``os.pread`` (:class:`~collab_distill.data.rows.RowFile`), never memory-mapped, so a
reader's memory does not grow with what it has read and the file pages are shared by every process
through the page cache.

Layout of a store folder (the user of this module adds its own index and identity)::

    <store>/meta.json                  identity, ``rows``, ``processes``, ``complete``
            shard_<p><suffix>          field data of shard p (fixed, or a ragged field's elements)
            shard_<p><suffix>.ends     a ragged field's row end offsets (int64, in elements)
            shard_<p>.json             rows of shard p written so far (after the data is flushed)

A build runs in ``.<store>.partial/`` beside the store (:func:`partial_path`) and is renamed into place
by :func:`finish_build` once every shard is whole: an existing store stays until its replacement is
complete, and a killed build resumes from the progress files (:class:`ShardWriter` reopens them). No
pickle anywhere.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from collab_distill.data.rows import RowFile
from collab_distill.errors import UserError
from collab_distill.paths import replace_folder

META_FILE = "meta.json"
ENDS_SUFFIX = ".ends"


class StoreError(UserError, ValueError):
    """A store that cannot be read or built: missing, incomplete, damaged, or of something else; the
    message names the file or field and what to do."""


@dataclass(frozen=True)
class Field:
    """One array of every row of a store.

    Attributes:
        name: the field's name (``write(name=...)``, ``read(name, rows)``).
        dtype: numpy dtype name, e.g. ``"float16"``.
        shape: one row's shape (fixed), or one element's shape (ragged).
        ragged: rows have varying numbers of elements: ``(n_r, *shape)``.
        suffix: file name after ``shard_<p>``; default ``_<name>.<dtype>``.
    """

    name: str
    dtype: str
    shape: tuple[int, ...] = ()
    ragged: bool = False
    suffix: str = ""

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def file(self, folder: Path, rank: int) -> Path:
        """The data file of shard ``rank`` (a ragged field's elements)."""
        return Path(folder) / f"shard_{rank}{self.suffix or f'_{self.name}.{self.dtype}'}"

    def ends_file(self, folder: Path, rank: int) -> Path:
        """A ragged field's row end offsets of shard ``rank``."""
        return self.file(folder, rank).with_name(self.file(folder, rank).name + ENDS_SUFFIX)

    @property
    def element_bytes(self) -> int:
        """Bytes of one fixed row, or of one ragged element."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.numpy_dtype.itemsize


def shard_size(rows: int, processes: int, rank: int) -> int:
    """Rows held by shard ``rank`` when ``rows`` rows are dealt round-robin to ``processes`` shards."""
    return len(range(rank, rows, processes))


def progress_file(folder: Path, rank: int) -> Path:
    """The progress record of shard ``rank``."""
    return Path(folder) / f"shard_{rank}.json"


def partial_path(path: str | Path) -> Path:
    """The folder a build of the store ``path`` writes to until it is complete: ``.<name>.partial`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes (read in ``chunk``-byte pieces)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: Path, content: Mapping[str, Any]) -> None:
    """Write ``content`` as JSON to ``path`` atomically (a temporary file, fsynced, renamed)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(content, indent=1))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path, what: str, hint: str) -> dict[str, Any]:
    """The JSON object in ``path``.

    Raises:
        StoreError: missing, unreadable or not an object: one line naming ``path``, ``what`` it is and ``hint``.
    """
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{path}: {what} not found; {hint}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: unreadable {what} ({exc.__class__.__name__}); {hint} (--overwrite)") from None
    if not isinstance(content, dict):
        raise StoreError(f"{path}: not a {what}; {hint} (--overwrite)")
    return content


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
def begin_build(folder: Path, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> None:
    """Start a build in ``folder`` (a :func:`partial_path`): the ``.npy`` ``arrays`` (e.g. an index, by
    file name) and ``meta.json`` with ``complete: false``; a folder already there is emptied first."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name, array in (arrays or {}).items():
        tmp = folder / f".{name}.tmp.npy"
        np.save(tmp, array, allow_pickle=False)
        os.replace(tmp, folder / name)
    write_json(folder / META_FILE, {**meta, "complete": False})


def begin_or_resume(folder: Path, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None, *,
                    overwrite: bool = False, main: bool = True, wait: Callable[[], None] = lambda: None,
                    error: type[StoreError] = StoreError) -> bool:
    """Resume the build in ``folder`` when its ``meta.json`` equals ``meta``; otherwise start it afresh with
    :func:`begin_build` (a build in progress of anything else only with ``overwrite``). In every process of a
    build: each decides from what it reads before the ``main`` one writes, with ``wait`` (the processes'
    barrier) around the write.

    Returns:
        True when an existing build is resumed.

    Raises:
        ``error``: a build in progress of something else, without ``overwrite``: one line naming the first
            differing key and both values.
    """
    existing = read_build_meta(folder)
    found, wanted = flatten(existing or {}), flatten(meta)
    differs = first_difference(found, wanted) if existing is not None else None
    wait()
    if differs is not None and not overwrite:
        raise error(f"{folder}: a build in progress has {differs} {short_value(found.get(differs))}, this one "
                    f"{short_value(wanted[differs])}; use --overwrite to start again")
    if main and (existing is None or differs is not None):
        begin_build(folder, meta, arrays)
    wait()
    return existing is not None and differs is None


def read_build_meta(folder: Path) -> dict[str, Any] | None:
    """The ``meta.json`` of a build in progress in ``folder``, or None when there is none to resume
    (no folder, or one cut short before its meta was written)."""
    path = folder / META_FILE
    if not path.is_file():
        return None
    try:
        return read_json(path, "build record", "")
    except StoreError:
        return None


def _open_sized(path: Path, nbytes: int) -> int:
    """A read-write descriptor of ``path`` with exactly ``nbytes`` bytes: extended as a sparse file (no block
    is allocated until it is written) or cut back."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if os.fstat(fd).st_size != nbytes:
        os.ftruncate(fd, nbytes)
    return fd


def _pwrite_all(fd: int, data: np.ndarray, offset: int) -> None:
    """Write ``data``'s bytes at ``offset`` (``pwrite`` may write fewer bytes than asked: loop)."""
    view = memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


class ShardWriter:
    """The shard of one build process: its fields' files, and how many of its rows are written.

    Every file is written with ``os.pwrite`` at its offset (no memory map, so a build's memory does not
    grow with the rows it writes): a fixed field's file is made at its full size as a sparse file; a
    ragged field's elements follow each other in its values file (cut back to the last committed row on
    resume) and its row ends go to a fixed ``int64`` file.

    Args:
        folder: the build folder.
        rank, processes: this process and how many write the store.
        rows: rows of the whole store.
        fields: the store's fields.
    """

    def __init__(self, folder: Path, rank: int, processes: int, rows: int, fields: Sequence[Field]) -> None:
        self.size = shard_size(rows, processes, rank)
        self.fields = tuple(fields)
        self.progress_file = progress_file(folder, rank)
        done = read_json(self.progress_file, "progress", "") if self.progress_file.is_file() else {"rows": 0}
        self.done = int(done.get("rows", 0))
        self.last_commit = time.monotonic()
        self.fixed: dict[str, int] = {}     # field -> descriptor of its rows (a ragged field: of its row ends)
        self.values: dict[str, int] = {}    # ragged field -> descriptor of its elements
        self.elements: dict[str, int] = {}  # ragged field -> elements written
        for field in self.fields:
            if not field.ragged:
                self.fixed[field.name] = _open_sized(field.file(folder, rank), self.size * field.element_bytes)
                continue
            ends = self.fixed[field.name] = _open_sized(field.ends_file(folder, rank), self.size * 8)
            last = np.frombuffer(os.pread(ends, 8, (self.done - 1) * 8), np.int64) if self.done else [0]
            self.elements[field.name] = int(last[0])
            self.values[field.name] = _open_sized(field.file(folder, rank),  # drop what was not committed
                                                  self.elements[field.name] * field.element_bytes)

    def write(self, **arrays: np.ndarray | Sequence[np.ndarray]) -> None:
        """Write the next ``B`` rows of every field: a fixed field ``(B, *shape)`` (cast to its dtype), a
        ragged one a sequence of ``B`` arrays ``(n_i, *shape)``. They count as done after :meth:`commit`.

        Raises:
            ValueError: a field is missing, unknown, or given another number of rows than the others.
        """
        if set(arrays) != {f.name for f in self.fields}:
            raise ValueError(f"write needs exactly the fields {[f.name for f in self.fields]}, got {sorted(arrays)}")
        count = {len(a) for a in arrays.values()}
        if len(count) != 1:
            raise ValueError(f"fields given different numbers of rows: { {k: len(a) for k, a in arrays.items()} }")
        end = self.done + count.pop()
        if end > self.size:
            raise ValueError(f"shard {self.progress_file.stem} holds {self.size} rows, writing up to row {end}")
        for field in self.fields:
            given = arrays[field.name]
            if not field.ragged:
                rows = np.asarray(given, dtype=field.numpy_dtype).reshape(-1, *field.shape)
                _pwrite_all(self.fixed[field.name], rows, self.done * field.element_bytes)
                continue
            ends = np.empty(len(given), np.int64)
            for i, rows in enumerate(given):
                rows = np.asarray(rows, dtype=field.numpy_dtype).reshape(-1, *field.shape)
                _pwrite_all(self.values[field.name], rows, self.elements[field.name] * field.element_bytes)
                self.elements[field.name] += len(rows)
                ends[i] = self.elements[field.name]
            _pwrite_all(self.fixed[field.name], ends, self.done * 8)
        self.done = end

    def commit(self) -> None:
        """Flush the written rows to disk, then record them in the progress file (atomically)."""
        for fd in (*self.fixed.values(), *self.values.values()):
            os.fsync(fd)
        write_json(self.progress_file, {"rows": self.done})
        self.last_commit = time.monotonic()

    def commit_every(self, seconds: float) -> None:
        """:meth:`commit` when the last one is at least ``seconds`` old (call after each :meth:`write`)."""
        if time.monotonic() - self.last_commit >= seconds:
            self.commit()

    def close(self) -> None:
        """Close the files (what was not committed is dropped on resume)."""
        for fd in (*getattr(self, "fixed", {}).values(), *getattr(self, "values", {}).values()):
            os.close(fd)
        self.fixed, self.values = {}, {}

    def __del__(self) -> None:
        self.close()


def finish_build(folder: Path, path: Path, error: type[StoreError] = StoreError) -> None:
    """Mark the build in ``folder`` complete and move it to ``path``; a store already at ``path`` is
    removed only after the new one is in place.

    Raises:
        ``error``: a shard has fewer rows written than it holds.
    """
    try:
        meta = read_json(folder / META_FILE, "build record", "run the build again")
        for rank in range(meta["processes"]):
            done = read_json(progress_file(folder, rank), "progress", "run the build again").get("rows")
            if done != shard_size(meta["rows"], meta["processes"], rank):
                raise StoreError(f"{folder}: shard {rank} has {done} of "
                                 f"{shard_size(meta['rows'], meta['processes'], rank)} rows; run the build again")
    except StoreError as exc:
        raise error(str(exc)) from None
    write_json(folder / META_FILE, {**meta, "complete": True})
    replace_folder(folder, path)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
class ShardReader:
    """The rows of a store's shards, read with ``os.pread`` into fresh arrays (nothing kept per row).

    Pickles by its layout: a DataLoader worker opens the files again; ``pread`` reads at an offset, so
    descriptors inherited by a forked worker are safe to share.

    Args:
        folder: the store folder.
        rows, processes: the store's rows and the processes that wrote it (``meta.json``).
        fields: the store's fields.
    """

    def __init__(self, folder: str | Path, rows: int, processes: int, fields: Sequence[Field]) -> None:
        self.folder, self.rows, self.processes = Path(folder), int(rows), int(processes)
        self.fields = {f.name: f for f in fields}
        self._files: dict[tuple[str, int], tuple[RowFile, RowFile | None]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "rows": self.rows, "processes": self.processes,
                "fields": list(self.fields.values())}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def size_problem(self) -> str | None:
        """The first file whose size disagrees with the layout (``"<file>: <n> bytes, expected <m>"``, or
        ``missing``), or None when every file has its size."""
        for rank in range(self.processes):
            size = shard_size(self.rows, self.processes, rank)
            for field in self.fields.values():
                expected = [(field.file(self.folder, rank), size * field.element_bytes)]
                if field.ragged:
                    ends = field.ends_file(self.folder, rank)
                    expected = [(ends, size * 8)]
                    if ends.is_file() and ends.stat().st_size == size * 8:
                        last = int(RowFile(ends, np.int64).read(size - 1, size)[0]) if size else 0
                        expected.append((field.file(self.folder, rank), last * field.element_bytes))
                for file, nbytes in expected:
                    found = file.stat().st_size if file.is_file() else None
                    if found != nbytes:
                        return f"{file}: {'missing' if found is None else f'{found} bytes'}, expected {nbytes}"
        return None

    def _open(self, name: str, rank: int) -> tuple[RowFile, RowFile | None]:
        key = (name, rank)
        if key not in self._files:
            field, size = self.fields[name], shard_size(self.rows, self.processes, rank)
            if field.ragged:
                self._files[key] = (RowFile(field.file(self.folder, rank), field.dtype, field.shape),
                                    RowFile(field.ends_file(self.folder, rank), np.int64, (), rows=size))
            else:
                self._files[key] = (RowFile(field.file(self.folder, rank), field.dtype, field.shape, rows=size), None)
        return self._files[key]

    def read(self, name: str, rows: Sequence[int]) -> np.ndarray | list[np.ndarray]:
        """Field ``name`` of ``rows`` (store row numbers, in that order): ``(len(rows), *shape)`` for a
        fixed field, a list of ``(n_r, *shape)`` arrays for a ragged one; fresh arrays.

        Raises:
            StoreError: a row outside the store, or a file cut short.
        """
        field = self.fields[name]
        out = [] if field.ragged else np.empty((len(rows), *field.shape), field.numpy_dtype)
        for i, row in enumerate(rows):
            row = int(row)
            if not 0 <= row < self.rows:
                raise StoreError(f"{self.folder}: row {row} of a store of {self.rows} rows")
            data, ends = self._open(name, row % self.processes)
            position = row // self.processes
            try:
                if ends is None:
                    out[i] = data.row(position)
                    continue
                start = int(ends.row(position - 1)) if position else 0
                out.append(data.read(start, int(ends.row(position))))
            except (EOFError, IndexError) as exc:
                raise StoreError(f"{exc}; the store is damaged: build it again (--overwrite)") from None
        return out

    def close(self) -> None:
        """Close the files (reading again opens them again)."""
        for data, ends in getattr(self, "_files", {}).values():
            data.close()
            if ends is not None:
                ends.close()
        self._files = {}

    def __del__(self) -> None:
        self.close()


class ShardedStore:
    """A complete store opened for reading: its ``meta.json`` checked (version, ``complete``) and its files'
    sizes checked against the layout; nothing else is read at open. Pickles by path.

    A kind of store subclasses it and sets :attr:`WHAT`, :attr:`VERSION`, :attr:`HINT`, :attr:`ERROR` and
    :meth:`fields` (and reads its own keys of :attr:`meta` in :meth:`parse`).

    Args:
        path: the store folder.

    Raises:
        ERROR: missing, incomplete (a build not finished), of another version, malformed, or a file of
            another size than ``meta.json`` says; one line naming the file and what to do.
    """

    WHAT: ClassVar[str] = "store"                  # what it is, for messages
    VERSION: ClassVar[int] = 1                     # the ``store_version`` this code reads
    HINT: ClassVar[str] = "build it again"         # how to make a good one
    ERROR: ClassVar[type[StoreError]] = StoreError

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            meta = read_json(self.path / META_FILE, self.WHAT, self.HINT)
        except StoreError as exc:
            raise self.ERROR(str(exc)) from None
        if meta.get("store_version") != self.VERSION:
            raise self.ERROR(f"{self.path / META_FILE}: store version {meta.get('store_version')!r}, this code reads "
                             f"{self.VERSION}; {self.HINT} (--overwrite)")
        if meta.get("complete") is not True:
            raise self.ERROR(f"{self.path}: incomplete {self.WHAT} (its build did not finish); run the same command "
                             "again to resume it")
        self.meta = meta
        try:
            self.rows, self.processes = int(meta["rows"]), int(meta["processes"])
            self.parse(meta)
            fields = self.fields(meta)
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise self.ERROR(f"{self.path / META_FILE}: malformed ({exc.__class__.__name__}: {exc}); {self.HINT} "
                             "(--overwrite)") from None
        self.shards = ShardReader(self.path, self.rows, self.processes, fields)
        problem = self.shards.size_problem()
        if problem is not None:
            raise self.ERROR(f"{problem} ({META_FILE}); {self.HINT} (--overwrite)")

    def parse(self, meta: Mapping[str, Any]) -> None:
        """Read the kind's own keys of ``meta`` into attributes (a missing or bad key raises
        ``KeyError``/``TypeError``/``ValueError``: a malformed store)."""

    def fields(self, meta: Mapping[str, Any]) -> Sequence[Field]:
        """The store's fields, from its ``meta``."""
        raise NotImplementedError

    def check(self, identity: Mapping[str, Any]) -> None:
        """Refuse a store of another ``identity``: one :attr:`ERROR` line naming the first differing field
        (a kind that :meth:`reuse` serves defines it)."""
        raise NotImplementedError

    @classmethod
    def reuse(cls, path: str | Path, identity: Mapping[str, Any], overwrite: bool = False) -> ShardedStore | None:
        """The complete store at ``path`` when it has ``identity`` (:meth:`check`); None when none is there, or
        when, with ``overwrite``, the one there cannot serve (damaged, incomplete, of another version or
        identity): the caller then builds it (anew).

        Raises:
            ERROR: without ``overwrite``, a store there that cannot serve.
        """
        if not (Path(path) / META_FILE).is_file():
            return None
        try:
            store = cls(path)
            store.check(identity)
            return store
        except cls.ERROR:
            if not overwrite:
                raise
            return None

    def read(self, name: str, rows: Sequence[int]) -> np.ndarray | list[np.ndarray]:
        """Field ``name`` of store ``rows`` (:meth:`ShardReader.read`); a damaged file raises :attr:`ERROR`."""
        try:
            return self.shards.read(name, rows)
        except StoreError as exc:
            raise self.ERROR(f"{exc}; {self.HINT}") from None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def close(self) -> None:
        """Close the store's files (reading again opens them again)."""
        shards = getattr(self, "shards", None)  # also when __init__ stopped before opening any
        if shards is not None:
            shards.close()

    def __del__(self) -> None:
        self.close()
