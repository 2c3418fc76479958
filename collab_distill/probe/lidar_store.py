"""The 3D probe's training-point store: the frozen point encoder's features of the labelled points of
every training scan, on disk (files only; :mod:`collab_distill.probe.lidar_features` builds it).

The head of the 3D probe trains many epochs on features that never change (the encoder is frozen), so
they are computed once and written here in float16, with their evaluation-class labels in uint8; the
head then streams mini-batches from the files (:class:`PointChunks`), so its memory does not grow with
the number of scans. One row per scan (``R`` selected scans of the training split, in the info
store's order), two ragged fields on :mod:`collab_distill.data.shards` (the one store mechanism)::

    <store>/meta.json                   identity (encoder, data, subsample), ``rows``, ``processes``,
                                        ``channels``, ``complete``
            shard_<p>_features.float16  (points of the rows of process p, C) float16, row after row
            shard_<p>_labels.uint8      (points of the rows of process p,) evaluation class 0..15
            shard_<p>_*.ends            int64 end offset of each row (ragged fields)
            shard_<p>.json              rows of shard p written so far

A store is a :class:`~collab_distill.data.shards.ShardedStore`; it serves a run only if its identity equals
the run's, key by key (:meth:`PointStore.check`):
another encoder (weights sha256), architecture, voxel size, data selection or subsample is one
:class:`PointStoreError` line naming the key. No pickle anywhere.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from collab_distill.data.rows import RowFile
from collab_distill.data.shards import Field, ShardedStore, StoreError, first_difference, flatten, short_value

STORE_VERSION = 1
FEATURE_DTYPE = np.dtype(np.float16)
LABEL_DTYPE = np.dtype(np.uint8)
BUILD_HINT = "tools/probe_lidar.py builds it"


class PointStoreError(StoreError):
    """A training-point store that cannot serve this 3D probe: missing, incomplete, damaged, or of another
    encoder, data or subsample; the message names the key and what to do."""


def point_fields(channels: int) -> tuple[Field, Field]:
    """The store's ragged fields: ``features (n_r, channels)`` float16 and ``labels (n_r,)`` uint8."""
    return (Field("features", FEATURE_DTYPE.name, (int(channels),), ragged=True),
            Field("labels", LABEL_DTYPE.name, (), ragged=True))


class PointStore(ShardedStore):
    """A complete training-point store (:class:`~collab_distill.data.shards.ShardedStore`: nothing is read at
    open; rows are read with ``os.pread``; pickles by path).

    Args:
        path: the store folder.

    Raises:
        PointStoreError: missing, incomplete (its build did not finish), of another version, or a file of
            another size than ``meta.json`` says.
    """

    WHAT = "3D probe point store"
    VERSION = STORE_VERSION
    HINT = BUILD_HINT
    ERROR = PointStoreError

    def parse(self, meta: Mapping[str, Any]) -> None:
        self.channels = int(meta["channels"])

    def fields(self, meta: Mapping[str, Any]) -> tuple[Field, Field]:
        return point_fields(int(meta["channels"]))

    @property
    def points(self) -> int:
        """Points in the store: the last row end of every shard (read from the files, not kept)."""
        total = 0
        for rank in range(self.processes):
            ends = RowFile(self.shards.fields["labels"].ends_file(self.path, rank), np.int64)
            total += int(ends.row(ends.rows - 1)) if ends.rows else 0
            ends.close()
        return total

    def read_points(self, rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``features (n, C)`` float16 and ``labels (n,)`` uint8 of the points of ``rows``, concatenated in
        that order (fresh arrays).

        Raises:
            PointStoreError: a row outside the store, or a file cut short.
        """
        if not len(rows):
            return np.zeros((0, self.channels), FEATURE_DTYPE), np.zeros(0, LABEL_DTYPE)
        return np.concatenate(self.read("features", rows)), np.concatenate(self.read("labels", rows))

    def check(self, identity: Mapping[str, Any]) -> None:
        """Refuse a store of something else: every key of ``identity`` (nested sections as dotted keys) must
        hold the stored value.

        Raises:
            PointStoreError: one line naming the first differing key and both values.
        """
        stored, wanted = flatten(self.meta), flatten(identity)
        key = first_difference(stored, wanted)
        if key is not None:
            raise PointStoreError(f"{self.path}: {key} is {short_value(stored.get(key))} in the store, "
                                  f"{short_value(wanted[key])} for this probe; {BUILD_HINT} (--overwrite replaces "
                                  "it), or set store= to another folder")


class PointChunks(Dataset):
    """The training points of one epoch in seeded chunks: item ``k`` is the points of ``chunk_scans`` scans
    (the ``k``-th group of a seeded permutation of the rows), shuffled together. Items depend only on
    ``(seed, epoch, k)``, so a DataLoader gives the same stream whatever its workers.

    Args:
        store: the point store.
        chunk_scans: scans per chunk (the shuffle window; memory is this many scans, not the split).
        seed: base seed of the order.
    """

    def __init__(self, store: PointStore, chunk_scans: int, seed: int) -> None:
        self.store, self.chunk_scans, self.seed, self.epoch = store, int(chunk_scans), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """The permutation of the rows and of the points of each chunk for ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return -(-self.store.rows // self.chunk_scans)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``features (n, C)`` float16 and ``labels (n,)`` int64 of chunk ``k``, in a seeded random order."""
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.store.rows)
        features, labels = self.store.read_points(order[k * self.chunk_scans:(k + 1) * self.chunk_scans])
        shuffle = np.random.default_rng([self.seed, self.epoch, k]).permutation(len(labels))
        return torch.from_numpy(features[shuffle]), torch.from_numpy(labels[shuffle].astype(np.int64))
