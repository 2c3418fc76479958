"""The probe feature store: a frozen encoder's features and the sparse targets of every view, on disk.

Files only (no model code): :mod:`collab_distill.probe.store_build` writes a store, the heads read it
row by row with ``os.pread`` (:class:`~collab_distill.data.shards.ShardReader`, the one store
mechanism), so a process's memory does not grow with the number of views. One store serves every probe
that reads the same encoder, blocks and views: the tokens are stored *before* the final LayerNorm and
the norm is applied when a head reads them (:meth:`ProbeStore.head_input`), so the seg probe (norm, no
CLS) and the depth probe (no norm, CLS) share it. Layout (``R`` views, ``P`` build processes, patch map
``(C, h, w)`` = the blocks' ``D`` channels concatenated, ``C = n*D``)::

    <store>/meta.json             identity (encoder, views), shapes, tag vocabulary, targets, ``complete``
            view_rows.npy         (R,) int64: the store row of each view (views in dataset order)
            norm_weight.npy       (D,) float32: the final LayerNorm's weight (``norm_bias.npy``: its bias;
                                  ``meta.json`` ``norm_eps``)
            shard_<p>_patch.float16    (rows, C, h, w) un-normed patch tokens of the blocks
            shard_<p>_cls.float16      (rows, C) un-normed CLS tokens of the blocks
            shard_<p>_pixel.int32      sparse targets, ragged: flat pixel ``y * W + x`` at the probe size,
            shard_<p>_label.uint8      sorted, of every pixel with a LiDAR point (or a label): its class
            shard_<p>_depth.float32    (``IGNORE`` if none) and depth in metres (0 if none)
            shard_<p>_tags.int64       bitmask over the tag vocabulary (``meta.json`` ``tags``)
            shard_<p>_name.uint8       the view's name (UTF-8 bytes, ragged)

A store is found by the sha256 of its identity (:func:`identity_hash`) under ``store.dir``; one that
is opened for a run must have that identity, else :class:`ProbeStoreError` names the first differing
field in one line (:meth:`ProbeStore.check`). No pickle anywhere.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from collab_distill.data.rows import RowFile
from collab_distill.data.shards import (
    META_FILE,
    Field,
    ShardedStore,
    StoreError,
    first_difference,
    flatten,
    sha256_file,
    short_value,
)
from collab_distill.data.taxonomy import IGNORE

STORE_VERSION = 1
FEATURE_DTYPE = np.dtype(np.float16)
VIEW_ROWS_FILE = "view_rows.npy"
NORM_WEIGHT_FILE, NORM_BIAS_FILE = "norm_weight.npy", "norm_bias.npy"
TARGETS = ("label", "depth")
REBUILD_HINT = "rebuild it: run the probe again"
IDENTITY_HINT = ("leave store.train/store.eval empty (a store of this encoder and data is then found or built under "
                 "store.dir) or point them at one")


class ProbeStoreError(StoreError):
    """A probe feature store that cannot serve this run: missing, incomplete, damaged, or of another
    encoder or view set; the message names the field and what to do."""


def store_fields(patch_shape: Sequence[int]) -> tuple[Field, ...]:
    """The fields of a store whose patch maps are ``(C, h, w)``."""
    channels = int(patch_shape[0])
    return (Field("patch", FEATURE_DTYPE.name, tuple(int(n) for n in patch_shape)),
            Field("cls", FEATURE_DTYPE.name, (channels,)),
            Field("pixel", "int32", ragged=True), Field("label", "uint8", ragged=True),
            Field("depth", "float32", ragged=True), Field("tags", "int64"), Field("name", "uint8", ragged=True))


def identity_hash(identity: Mapping[str, Any]) -> str:
    """Hex sha256 of ``identity`` as sorted JSON: the folder name of its store under ``store.dir``."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def tag_bits(tags: Sequence[str], vocabulary: Sequence[str]) -> int:
    """The bitmask of ``tags`` over ``vocabulary`` (bit ``i`` = ``vocabulary[i]``)."""
    return sum(1 << i for i, tag in enumerate(vocabulary) if tag in tags)


def sparse_targets(label: Tensor | None, depth: Tensor | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense ``(H, W)`` maps (``label`` uint8 with ``IGNORE``, ``depth`` float32 with 0 = none; either
    may be None) -> the pixels holding a label or a depth: ``pixel (n,)`` int32 flat ``y * W + x``
    (ascending), ``label (n,)`` uint8, ``depth (n,)`` float32."""
    shape = (label if label is not None else depth).shape
    has = torch.zeros(shape, dtype=torch.bool)
    if label is not None:
        has |= label != IGNORE
    if depth is not None:
        has |= depth > 0
    pixel = has.flatten().nonzero()[:, 0]
    labels = label.flatten()[pixel] if label is not None else torch.full((len(pixel),), IGNORE, dtype=torch.uint8)
    depths = depth.flatten()[pixel] if depth is not None else torch.zeros(len(pixel))
    return pixel.int().numpy(), labels.to(torch.uint8).numpy(), depths.float().numpy()


def dense_maps(pixel: Tensor, label: Tensor, depth: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Sparse targets of one view -> ``label (H, W)`` uint8 (``IGNORE`` elsewhere) and ``depth (H, W)``
    float32 (0 elsewhere): the inverse of :func:`sparse_targets`."""
    label_map = torch.full((size[0] * size[1],), IGNORE, dtype=torch.uint8)
    depth_map = torch.zeros(size[0] * size[1])
    label_map[pixel.long()] = label.to(torch.uint8)
    depth_map[pixel.long()] = depth.float()
    return label_map.view(size), depth_map.view(size)


class ProbeStore(ShardedStore):
    """A complete probe feature store (nothing but ``meta.json`` and the norm is read at open).

    Views are numbered ``0 .. R-1`` in the order of the dataset they were built from (sample, then
    camera); :meth:`fetch`, :meth:`head_input` and :meth:`sparse` take those numbers (``view_rows.npy``
    maps them to store rows). Pickles by path: a DataLoader worker opens the files again.

    Args:
        path: the store folder.

    Raises:
        ProbeStoreError: missing, incomplete, of another version, malformed, or a file of another size.
    """

    WHAT, VERSION, HINT, ERROR = "probe feature store", STORE_VERSION, REBUILD_HINT, ProbeStoreError

    def __init__(self, path: str | Path) -> None:
        self._view_rows: RowFile | None = None
        super().__init__(path)

    def parse(self, meta: Mapping[str, Any]) -> None:
        self.patch_shape: tuple[int, int, int] = tuple(int(n) for n in meta["patch_shape"])
        self.image_size: tuple[int, int] = tuple(int(n) for n in meta["identity"]["encoder"]["image_size"])
        self.tags_vocabulary = [str(t) for t in meta["tags"]]
        self.targets = [str(t) for t in meta["targets"]]
        self.norm_eps = float(meta["norm_eps"])
        self.norm_weight = torch.from_numpy(np.load(self.path / NORM_WEIGHT_FILE, allow_pickle=False))
        self.norm_bias = torch.from_numpy(np.load(self.path / NORM_BIAS_FILE, allow_pickle=False))

    def fields(self, meta: Mapping[str, Any]) -> tuple[Field, ...]:
        return store_fields(meta["patch_shape"])

    def __len__(self) -> int:
        return self.rows

    @property
    def meta_sha256(self) -> str:
        """sha256 of the store's ``meta.json`` (identity, shapes, build): what a result recipe names."""
        return sha256_file(self.path / META_FILE)

    @property
    def in_dim(self) -> int:
        """Channels of the patch maps (a head reading the CLS too gets twice as many)."""
        return self.patch_shape[0]

    def check(self, identity: Mapping[str, Any]) -> None:
        """Refuse a store of another identity (encoder, blocks, image size, views).

        Raises:
            ProbeStoreError: one line naming the first differing field and both values.
        """
        stored, wanted = flatten(self.meta.get("identity", {})), flatten(identity)
        key = first_difference(stored, wanted)
        if key is not None:
            raise ProbeStoreError(f"{self.path}: identity {key} is {short_value(stored.get(key))} in the store, "
                                  f"{short_value(wanted[key])} for this run; {IDENTITY_HINT}")

    def _rows(self, views: Sequence[int]) -> list[int]:
        if self._view_rows is None:
            self._view_rows = RowFile.npy(self.path / VIEW_ROWS_FILE)
        return [int(r) for r in self._view_rows.take(views)]

    def fetch(self, name: str, views: Sequence[int]) -> np.ndarray | list[np.ndarray]:
        """Field ``name`` of ``views``: fixed ``(len(views), *shape)``, ragged a list of arrays (fresh)."""
        return self.read(name, self._rows(views))

    def tags(self, view: int) -> tuple[str, ...]:
        """The tags of ``view``, in vocabulary order."""
        bits = int(self.fetch("tags", [view])[0])
        return tuple(tag for i, tag in enumerate(self.tags_vocabulary) if bits >> i & 1)

    def name(self, view: int) -> str:
        """The name of ``view`` (``<sample token>/<CAMERA>`` or a file stem)."""
        return self.fetch("name", [view])[0].tobytes().decode()

    def head_input(self, views: Sequence[int], norm: bool, cls_token: bool) -> Tensor:
        """``(B, C', h, w)`` float32 input of a head for ``views``: the patch tokens, with the final LayerNorm
        applied per block when ``norm``, then (``cls_token``) the blocks' CLS tokens (normed alike)
        broadcast to every position; ``C' = C`` or ``2C``."""
        rows = self._rows(views)
        patch = torch.from_numpy(self.read("patch", rows)).float()
        if norm:
            patch = self._norm(patch.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(patch.shape)
        if not cls_token:
            return patch
        cls = torch.from_numpy(self.read("cls", rows)).float()
        cls = self._norm(cls[:, None])[:, 0] if norm else cls
        return torch.cat([patch, cls[:, :, None, None].expand(-1, -1, *patch.shape[-2:])], dim=1)

    def _norm(self, tokens: Tensor) -> Tensor:
        """``(B, T, n*D)`` -> each block's ``D`` channels LayerNormed with the stored weight, bias and eps."""
        d = len(self.norm_weight)
        blocks = tokens.reshape(*tokens.shape[:2], -1, d)
        return F.layer_norm(blocks, (d,), self.norm_weight, self.norm_bias, self.norm_eps).reshape(tokens.shape)

    def sparse(self, views: Sequence[int]) -> list[tuple[Tensor, Tensor, Tensor, int]]:
        """Per view of ``views``: ``pixel (n,)`` int64, ``label (n,)`` int64 (``IGNORE`` = none), ``depth
        (n,)`` float32 and the tag bitmask."""
        rows = self._rows(views)
        pixel, label, depth = (self.read(name, rows) for name in ("pixel", "label", "depth"))
        tags = self.read("tags", rows)
        return [(torch.from_numpy(p).long(), torch.from_numpy(lab).long(), torch.from_numpy(d), int(t))
                for p, lab, d, t in zip(pixel, label, depth, tags)]

    def targets_of(self, view: int) -> tuple[Tensor, Tensor, Tensor]:
        """``pixel``, ``label`` and ``depth`` of one view (:meth:`sparse`)."""
        return self.sparse([view])[0][:3]

    def close(self) -> None:
        """Close the store's files (reading again opens them again)."""
        rows = getattr(self, "_view_rows", None)
        if rows is not None:
            rows.close()
            self._view_rows = None
        super().close()
