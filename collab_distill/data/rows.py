"""Rows of a fixed-row-size array file, read with ``os.pread`` (no memory map).

The info store (``.npy`` arrays) and the teacher-feature store (raw shard files) read a few rows per
sample. A memory map keeps every page it touched, plus the kernel's read-ahead, mapped into the
process, so a worker's PSS/RSS climbs with the store's size over an epoch; ``pread`` copies the
bytes into a fresh array and the file pages stay in the page cache, shared by every process and
counted in none. ``pread`` takes its offset, not the descriptor's position, so descriptors inherited
through ``fork`` are safe to share; a pickled :class:`RowFile` keeps only its path and layout and
opens the file again where it is unpickled.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np


class RowFile:
    """An array file of ``rows`` rows of ``row_shape`` ``dtype`` (C order) starting at byte ``offset``.

    Args:
        path: the file.
        dtype: the element type.
        row_shape: the shape of one row (``()`` for a 1-D array).
        offset: the byte offset of row 0 (0 for a raw file; see :meth:`npy` for a ``.npy`` file).
        rows: the number of rows; defaults to what the file's size holds after ``offset``.

    The descriptor is opened on the first read; :meth:`close` closes it (reading again reopens).
    """

    def __init__(self, path: str | Path, dtype: np.dtype | str | type, row_shape: Sequence[int] = (),
                 offset: int = 0, rows: int | None = None) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(int(n) for n in row_shape)
        self.offset = int(offset)
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        if rows is None:
            rows = (os.stat(self.path).st_size - self.offset) // self.row_bytes if self.row_bytes else 0
        self.rows = int(rows)
        self._fd: int | None = None

    @classmethod
    def npy(cls, path: str | Path) -> RowFile:
        """The rows (along axis 0) of the ``.npy`` file ``path``, from its header (data not read).

        The descriptor the header was read through stays open, so the rows read are those of the file
        checked, even if ``path`` is replaced later (until :meth:`close`; a pickled copy opens ``path``).

        Raises:
            OSError: the file cannot be read.
            ValueError: not a ``.npy`` file, a 0-d or Fortran-order array, or an object dtype.
        """
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"{path}: .npy format version {version} is not read here")
            shape, fortran_order, dtype = read_header(f)
            offset = f.tell()
            if fortran_order or not shape or dtype.hasobject:
                raise ValueError(f"{path}: {'Fortran-order ' if fortran_order else ''}{dtype} {shape} array: rows "
                                 "of a C-order array of at least one dimension and no objects are read here")
            rows = cls(path, dtype, shape[1:], offset, shape[0])
            rows._fd = os.dup(f.fileno())
        return rows

    @property
    def shape(self) -> tuple[int, ...]:
        """The whole array's shape, ``(rows, *row_shape)``."""
        return (self.rows, *self.row_shape)

    @property
    def end(self) -> int:
        """The byte offset just after the last row: the file's size when nothing follows the rows."""
        return self.offset + self.rows * self.row_bytes

    def _descriptor(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def read(self, start: int, stop: int | None = None) -> np.ndarray:
        """``(stop - start, *row_shape)``: rows ``start`` to ``stop`` (default: ``start + 1``), a fresh array.

        Raises:
            IndexError: rows outside ``[0, rows]``.
            EOFError: the file ends before the rows (it was cut short).
        """
        start = int(start)
        stop = start + 1 if stop is None else int(stop)
        if not 0 <= start <= stop <= self.rows:
            raise IndexError(f"{self.path}: rows {start}:{stop} of {self.rows}")
        nbytes = (stop - start) * self.row_bytes
        out = np.empty((stop - start, *self.row_shape), self.dtype)
        if nbytes:
            view = memoryview(out.reshape(-1).view(np.uint8))
            done, fd, at = 0, self._descriptor(), self.offset + start * self.row_bytes
            while done < nbytes:  # pread may return fewer bytes than asked (large reads)
                got = os.preadv(fd, [view[done:]], at + done)
                if got == 0:
                    raise EOFError(f"{self.path}: cut short (rows {start}:{stop} end at byte "
                                   f"{self.offset + stop * self.row_bytes}, the file has {at + done})")
                done += got
        return out

    def row(self, index: int) -> np.ndarray:
        """``row_shape``: row ``index`` (``0 <= index < rows``), a fresh array."""
        return self.read(index)[0]

    def take(self, indices: Sequence[int]) -> np.ndarray:
        """``(len(indices), *row_shape)``: the rows ``indices``, in that order, a fresh array."""
        out = np.empty((len(indices), *self.row_shape), self.dtype)
        for i, index in enumerate(indices):
            out[i] = self.read(index)[0]
        return out

    def all(self) -> np.ndarray:
        """The whole array, a fresh array (O(rows) memory: for one-off reads the caller then drops)."""
        return self.read(0, self.rows)

    def close(self) -> None:
        """Close the descriptor (reading again opens it again)."""
        fd, self._fd = getattr(self, "_fd", None), None  # also when __init__ stopped early
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "dtype": self.dtype, "row_shape": self.row_shape, "offset": self.offset,
                "rows": self.rows}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]
