"""Build a probe feature store (:mod:`collab_distill.probe.store`): a frozen encoder over every view
once, its un-normed tokens in float16 and each view's sparse targets, written to the store's shards.

The views (rows) are those of a view dataset (:class:`~collab_distill.probe.data.NuScenesViews`,
:class:`~collab_distill.probe.data.FolderViews`, or any indexable set of ``list[ProbeView]`` items), in
item then camera order, loaded in DataLoader workers (``num_workers``). Under ``accelerate launch``
each process writes its own shard: process ``p`` takes a contiguous run of the views (so each item is
decoded by one process, two at a boundary) and writes them as rows ``p, p + P, ...``; ``view_rows.npy``
maps a view to its row. The tag vocabulary is the dataset's ``tag_vocabulary`` (the five condition tags
of a nuScenes-format set, the tags present in a folder set). With a
:class:`~collab_distill.data.corruptions.Corruption` the images are corrupted on the encoder's device
before it reads them, each view seeded by its number (a store of the unseen-corruption rows).
Progress is recorded per shard after the data is flushed, so a killed build
started again resumes where it stopped and gives the same store. Only the main process marks the
store complete.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from collab_distill.data.conditions import CONDITION_TAGS
from collab_distill.data.corruptions import Corruption
from collab_distill.data.shards import META_FILE, ShardWriter, begin_or_resume, finish_build, partial_path, shard_size
from collab_distill.probe.data import ProbeView
from collab_distill.probe.encoder import final_norm, probe_features
from collab_distill.probe.store import (
    FEATURE_DTYPE,
    NORM_BIAS_FILE,
    NORM_WEIGHT_FILE,
    STORE_VERSION,
    VIEW_ROWS_FILE,
    ProbeStore,
    ProbeStoreError,
    sparse_targets,
    store_fields,
    tag_bits,
)

log = logging.getLogger(__name__)


def view_counts(views: Dataset, items: Sequence[int]) -> np.ndarray:
    """``(len(items),)`` int64 views of each of ``items``: the dataset's ``view_counts()`` when it has
    one (no item is loaded), else the length of each item."""
    counts = getattr(views, "view_counts", None)
    if counts is not None:
        return np.asarray(counts(), dtype=np.int64)[np.asarray(items, dtype=np.int64)]
    return np.array([len(views[int(i)]) for i in items], dtype=np.int64)


def process_views(total: int, processes: int, rank: int) -> tuple[int, int]:
    """``[start, stop)``: the contiguous views process ``rank`` writes (as many as its shard holds)."""
    start = sum(shard_size(total, processes, p) for p in range(rank))
    return start, start + shard_size(total, processes, rank)


def view_rows(total: int, processes: int) -> np.ndarray:
    """``(total,)`` int64: the store row of each view (view ``start_p + j`` -> row ``p + j * P``)."""
    rows = np.empty(total, dtype=np.int64)
    for rank in range(processes):
        start, stop = process_views(total, processes, rank)
        rows[start:stop] = rank + np.arange(stop - start, dtype=np.int64) * processes
    return rows


class _SparseItems(Dataset):
    """The views of some items, with sparse targets (what a build writes), in a DataLoader worker.

    Args:
        views: the view dataset.
        items: dataset indices, in order.
        offsets: the global view number of each item's first view.
        skip_to, stop: the views to keep, ``[skip_to, stop)`` (others of ``items`` are dropped).
        vocabulary: the tag vocabulary.
    """

    def __init__(self, views: Dataset, items: Sequence[int], offsets: np.ndarray, skip_to: int, stop: int,
                 vocabulary: Sequence[str]) -> None:
        self.views, self.items, self.offsets = views, items, offsets
        self.skip_to, self.stop, self.vocabulary = skip_to, stop, tuple(vocabulary)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> list[dict[str, Any]]:
        out = []
        for j, view in enumerate(self.views[self.items[i]]):
            number = int(self.offsets[i]) + j
            if self.skip_to <= number < self.stop:
                out.append(_sparse_view(view, self.vocabulary, number))
        return out


def _sparse_view(view: ProbeView, vocabulary: Sequence[str], number: int) -> dict[str, Any]:
    pixel, label, depth = sparse_targets(view.label, view.depth)
    return {"image": view.image, "pixel": pixel, "label": label, "depth": depth, "view": number,
            "tags": tag_bits(view.tags, vocabulary), "name": np.frombuffer(view.name.encode(), np.uint8)}


def tag_vocabulary(views: Dataset) -> tuple[str, ...]:
    """The tags the views of ``views`` may carry: its ``tag_vocabulary``, else the condition tags."""
    return tuple(getattr(views, "tag_vocabulary", CONDITION_TAGS))


def _flatten(items: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [view for item in items for view in item]


def build_probe_store(encoder: torch.nn.Module, views: Dataset, items: Sequence[int], identity: Mapping[str, Any],
                      path: str | Path, targets: Sequence[str], feature_batch: int = 2, num_workers: int = 0,
                      progress: bool = True, commit_seconds: float = 30.0, overwrite: bool = False,
                      corruption: Corruption | None = None) -> ProbeStore:
    """Build (or resume) the probe store of ``encoder`` over the views of ``items`` in the folder
    ``path``, in every process of an ``accelerate launch`` (or in this one); a complete store of the
    same ``identity`` already there is opened as it is (without ``overwrite``).

    Args:
        encoder: a frozen :class:`~collab_distill.models.ImageEncoder` (or a module forwarding to one)
            on its device; its final LayerNorm is stored, its tokens are written before it.
        views: the view dataset (items are lists of :class:`ProbeView`).
        items: the dataset indices, in order.
        identity: what the store is of (``encoder`` with ``image_size`` and ``blocks``, ``views``); a
            store or a build in progress of another identity at ``path`` is refused.
        targets: which of ``label``/``depth`` the views carry (recorded in ``meta.json``).
        feature_batch: items per encoder call; num_workers: DataLoader workers.
        commit_seconds: flush and record progress at least this often (and at the end).
        overwrite: build anew even where a store is (it is replaced once the new one is complete), and
            restart a build in progress of other settings.
        corruption: corrupt every image before the encoder reads it (``identity`` should name it).

    Returns:
        the complete store (opened in every process).

    Raises:
        ProbeStoreError: a store or a build in progress of another identity at ``path`` (without
            ``overwrite``), or no view.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env
    from tqdm import tqdm

    path = Path(path)
    if (path / META_FILE).is_file() and not overwrite:
        store = ProbeStore(path)
        store.check(identity)
        return store
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    counts = view_counts(views, items)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(offsets[-1])
    if not total:
        raise ProbeStoreError(f"{path}: no view to store (the selection is empty)")
    blocks = list(identity["encoder"]["blocks"])
    norm = final_norm(encoder)
    device = next(encoder.parameters()).device
    probe_image = torch.zeros(1, 3, *identity["encoder"]["image_size"], device=device)
    patch_shape = list(probe_features(encoder, probe_image, blocks)[0].shape[1:])
    vocabulary = tag_vocabulary(views)
    meta = {"store_version": STORE_VERSION, "identity": dict(identity), "rows": total, "processes": state.num_processes,
            "patch_shape": patch_shape, "dtype": FEATURE_DTYPE.name, "tags": list(vocabulary),
            "targets": list(targets), "norm_eps": float(norm.eps), "items": len(items)}
    folder = partial_path(path)
    arrays = {VIEW_ROWS_FILE: view_rows(total, state.num_processes),
              NORM_WEIGHT_FILE: norm.weight.detach().float().cpu().numpy(),
              NORM_BIAS_FILE: norm.bias.detach().float().cpu().numpy()}
    if begin_or_resume(folder, meta, arrays, overwrite=overwrite, main=state.is_main_process,
                       wait=state.wait_for_everyone, error=ProbeStoreError):
        log.info("resuming the probe store build in %s", folder)
    del arrays
    writer = ShardWriter(folder, state.process_index, state.num_processes, total, store_fields(patch_shape))
    start, stop = process_views(total, state.num_processes, state.process_index)
    skip_to = start + writer.done
    first = int(np.searchsorted(offsets, skip_to, side="right")) - 1
    last = int(np.searchsorted(offsets, stop, side="left"))
    chosen = items[first:last] if skip_to < stop else []
    loader = DataLoader(_SparseItems(views, chosen, offsets[first:last], skip_to, stop, vocabulary),
                        batch_size=feature_batch, num_workers=num_workers, collate_fn=_flatten)
    bar = tqdm(total=writer.size, initial=writer.done, desc=f"probe store {path.name[:12]}", unit="view",
               disable=not (progress and state.is_main_process))
    for batch in loader:
        if not batch:
            continue
        images = torch.stack([v["image"] for v in batch]).to(device)
        if corruption is not None:
            images = corruption(images, [v["view"] for v in batch])
        patch, cls = probe_features(encoder, images, blocks)
        writer.write(patch=patch.to("cpu", torch.float16).numpy(), cls=cls.to("cpu", torch.float16).numpy(),
                     pixel=[v["pixel"] for v in batch], label=[v["label"] for v in batch],
                     depth=[v["depth"] for v in batch], tags=np.array([v["tags"] for v in batch], np.int64),
                     name=[v["name"] for v in batch])
        bar.update(len(batch))
        writer.commit_every(commit_seconds)
    writer.commit()
    writer.close()
    bar.close()
    state.wait_for_everyone()
    if state.is_main_process:
        finish_build(folder, path, ProbeStoreError)
        log.info("probe store %s: %d views, %.2f GiB of features", path, total,
                 total * 2 * (np.prod(patch_shape) + patch_shape[0]) / 2**30)
    state.wait_for_everyone()
    return ProbeStore(path)

