"""The frozen point encoder over whole scans, batched: the 3D probe's DataLoader, its encoder call, the
stage-1 / teacher agreement per scan, and the build of the training-point store
(:mod:`collab_distill.probe.lidar_store`).

Scans are loaded by :class:`~collab_distill.data.dataset.PairedDataset` in DataLoader workers
(``data.num_workers``), ``train.feature_batch`` scans per encoder call, on ``device`` (batches pinned and
copied non-blocking on CUDA, as the trainer does). Images are decoded only when the agreement metric
needs the teacher (``with_images``); otherwise an item has no camera and no image file is opened.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from collab_distill.config import DataConfig
from collab_distill.data.collate import Collate
from collab_distill.data.dataset import PairedDataset
from collab_distill.data.feature_store import info_fingerprint
from collab_distill.data.shards import META_FILE, ShardWriter, begin_or_resume, finish_build, partial_path
from collab_distill.data.taxonomy import IGNORE, fine_to_eval_lut
from collab_distill.data.voxelize import Voxels
from collab_distill.losses import cosine_distance
from collab_distill.methods.stage1 import state_dict_sha256
from collab_distill.models import sample_features
from collab_distill.probe.config import ProbeError
from collab_distill.probe.lidar_store import (
    FEATURE_DTYPE,
    LABEL_DTYPE,
    STORE_VERSION,
    PointStore,
    PointStoreError,
    point_fields,
)

if TYPE_CHECKING:
    from collab_distill.probe.lidar import LidarProbeConfig

log = logging.getLogger(__name__)

VOXEL_KEYS = ("voxel_coords", "voxel_features", "voxel_inverse")
PAIR_KEYS = ("images", "pair_uv", "pair_image", "pair_point")


def split_data(cfg: LidarProbeConfig, split: str) -> DataConfig:
    """``cfg.data`` for ``split``: no augmentation, every point, float32 images (the teacher's input)."""
    return dataclasses.replace(cfg.data, split=split, augment=False, max_points=0, image_dtype="float32")


def probe_device(name: str) -> torch.device:
    """The device of the encoder and head: ``name`` (``cpu``, ``cuda``, ``cuda:<i>``); under ``accelerate
    launch`` a bare ``cuda`` is each process's own GPU.

    Raises:
        ProbeError: a CUDA device without CUDA.
    """
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ProbeError(f"device={name}: CUDA is not available here; set device=cpu")
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", _process()[2])
    return device


def _process() -> tuple[int, int, int]:
    """``(rank, processes, local rank)`` of this process (one process outside ``accelerate launch``)."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # as Accelerator does: without cpu=True, PartialState ignores ACCELERATE_USE_CPU and every process is rank 0
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    return state.process_index, state.num_processes, state.local_process_index


def is_main_process() -> bool:
    """Whether this is the main process of an ``accelerate launch`` (or the only process)."""
    return _process()[0] == 0


def _wait() -> None:
    from accelerate import PartialState

    PartialState().wait_for_everyone()


def eval_labels(fine: Tensor) -> Tensor:
    """``(N,)`` int64 evaluation classes 0..15 or ``IGNORE`` of ``(N,)`` lidarseg indices (sweep rows'
    ``IGNORE`` stays ``IGNORE``)."""
    lut = torch.from_numpy(fine_to_eval_lut())
    return torch.cat([lut, lut.new_full((IGNORE + 1 - len(lut),), IGNORE)])[fine]


def scan_batches(dataset: PairedDataset, rows: Sequence[int], batch: int, workers: int, device: torch.device
                 ) -> Iterator[tuple[list[int], dict[str, Any]]]:
    """The collated batches of the dataset items ``rows``, in that order, with the rows of each batch.

    Yields:
        ``(rows of the batch, batch)``: the batch's tensors on the CPU (pinned when ``device`` is CUDA).
    """
    loader = DataLoader(Subset(dataset, rows), batch_size=batch, num_workers=workers,
                        collate_fn=Collate(dataset.cfg.voxel_size), pin_memory=device.type == "cuda")
    start = 0
    for batch_data in loader:
        count = len(batch_data["offsets"])
        yield [int(r) for r in rows[start:start + count]], batch_data
        start += count


def encode(method: nn.Module, batch: dict[str, Any], device: torch.device) -> Tensor:
    """``(N, C)`` float32 point features of a collated batch, computed on ``device``."""
    moved = {**batch, **{k: batch[k].to(device, non_blocking=True) for k in VOXEL_KEYS}}
    return method.point_encoder(Voxels.from_batch(moved))


def scan_agreement(method: nn.Module, batch: dict[str, Any], features: Tensor, device: torch.device) -> Tensor:
    """``(B,)`` float64 per-scan mean cosine between the stage-1 head's features of the paired points and
    the teacher's at their pixels (``nan`` for a scan without pairs); ``features (N, C)`` from :func:`encode`."""
    moved = {**batch, **{k: batch[k].to(device, non_blocking=True) for k in PAIR_KEYS}}
    teacher = sample_features(method.teacher_maps(moved), moved["pair_uv"], moved["pair_image"],
                              method.teacher.patch_size)
    cos = 1 - cosine_distance(method.head(features[moved["pair_point"]]), teacher)
    scan = torch.searchsorted(batch["offsets"], batch["pair_point"], right=True)
    sums = torch.zeros(len(batch["offsets"]), dtype=torch.float64).index_add_(0, scan, cos.double().cpu())
    return sums / torch.bincount(scan, minlength=len(sums))   # 0 / 0 = nan: no pair


def scan_slices(offsets: Tensor) -> list[slice]:
    """The point rows of each scan of a batch, from its ``(B,)`` cumulative end ``offsets``."""
    ends = offsets.tolist()
    return [slice(start, end) for start, end in zip([0, *ends[:-1]], ends)]


def training_points(labels: Tensor, points_per_scan: int, rng: np.random.Generator) -> Tensor:
    """Sorted indices of the labelled points (not ``IGNORE``) of one scan's ``labels (n,)``: all of them, or
    a seeded subsample of ``points_per_scan`` (> 0) when there are more."""
    labelled = torch.nonzero(labels != IGNORE).flatten()
    if 0 < points_per_scan < len(labelled):
        labelled = labelled[torch.from_numpy(np.sort(rng.choice(len(labelled), points_per_scan, replace=False)))]
    return labelled


def store_identity(cfg: LidarProbeConfig, method: nn.Module, dataset: PairedDataset) -> dict[str, Any]:
    """What a training-point store depends on, as its ``meta.json`` records it and a run checks: the point
    encoder (state dict sha256: the weights, or the seeded random init; architecture), the data (info
    store fingerprint, conditions, sweeps, voxel size) and the subsample (points per scan, seed)."""
    return {"store_version": STORE_VERSION,
            "encoder": {"weights_sha256": state_dict_sha256(method.point_encoder),
                        "architecture": dataclasses.asdict(cfg.model.point)},
            "data": {**info_fingerprint(dataset.samples.store), "conditions": list(cfg.data.conditions),
                     "nsweeps": cfg.data.nsweeps, "voxel_size": cfg.data.voxel_size},
            "subsample": {"points_per_scan": cfg.train.points_per_scan, "seed": cfg.experiment.seed},
            "channels": method.point_encoder.out_channels, "dtype": FEATURE_DTYPE.name}


@torch.no_grad()
def build_point_store(cfg: LidarProbeConfig, method: nn.Module, path: str | Path, overwrite: bool = False,
                      progress: bool = True, commit_seconds: float = 30.0) -> PointStore:
    """The training-point store of ``cfg``'s encoder at ``path``: opened when it is there and of this
    encoder, data and subsample (also with ``overwrite``); else built (or resumed) in every process of an
    ``accelerate launch`` (each writes the rows ``rank::processes``), images never decoded.

    Args:
        cfg: the probe config (``train.split``, ``train.points_per_scan``, ``train.feature_batch``,
            ``data``, ``device``, ``experiment.seed``).
        method: the frozen stage-1 modules (:func:`~collab_distill.probe.lidar.build_stage1`).
        path: the store folder; a build writes ``.<name>.partial`` beside it and renames it into place.
        overwrite: replace a store of something else (or a non-empty folder), and discard a build in
            progress of something else.
        commit_seconds: flush and record progress at least this often (and at the end).

    Raises:
        PointStoreError: a store or a build in progress of something else (without ``overwrite``), or
            ``path`` is a non-empty folder that is not a store.
        ProbeError: the split has samples without lidarseg labels.
    """
    path, device = Path(path), probe_device(cfg.device)
    dataset = PairedDataset(split_data(cfg, cfg.train.split), seed=cfg.experiment.seed, train=False,
                            with_images=False)
    identity = store_identity(cfg, method, dataset)
    store = PointStore.reuse(path, identity, overwrite)
    if store is not None:
        return store
    if not (path / META_FILE).is_file() and path.exists() and any(path.iterdir()) and not overwrite:
        raise PointStoreError(f"{path} is a non-empty folder, not a 3D probe point store; use --overwrite to "
                              "replace it, or set store= to another folder")
    check_labelled(dataset)
    rank, processes, _ = _process()
    folder = partial_path(path)
    meta = {**identity, "rows": len(dataset), "processes": processes, "point_weights": cfg.point_weights}
    if begin_or_resume(folder, meta, overwrite=overwrite, main=rank == 0, wait=_wait, error=PointStoreError):
        log.info("resuming the 3D probe point store build in %s", folder)
    writer = ShardWriter(folder, rank, processes, len(dataset), point_fields(identity["channels"]))
    todo = range(len(dataset))[rank::processes][writer.done:]   # a range: no per-scan object to copy into workers
    method.point_encoder.to(device)
    with tqdm(total=writer.size, initial=writer.done, desc=f"point features ({cfg.train.split})", unit="scan",
              disable=not (progress and rank == 0)) as bar:
        for rows, batch in scan_batches(dataset, todo, cfg.train.feature_batch, cfg.data.num_workers, device):
            features, labels = encode(method, batch, device), eval_labels(batch["labels"])
            keep = [part.start + training_points(labels[part], cfg.train.points_per_scan, np.random.default_rng(
                [cfg.experiment.seed, int(dataset.samples.indices[r])])) for r, part in
                zip(rows, scan_slices(batch["offsets"]))]   # per scan, seeded by its info-store sample
            writer.write(features=[features[i].to(torch.float16).cpu().numpy() for i in keep],
                         labels=[labels[i].numpy().astype(LABEL_DTYPE) for i in keep])
            bar.update(len(rows))
            writer.commit_every(commit_seconds)
    writer.commit()
    writer.close()
    _wait()
    if rank == 0:
        finish_build(folder, path, error=PointStoreError)
    _wait()
    store = PointStore(path)
    if rank == 0:
        log.info("3D probe point store %s: %d points of %d scans", path, store.points, store.rows)
    return store


def check_labelled(dataset: PairedDataset) -> None:
    """Raise :class:`ProbeError` when a sample of ``dataset`` has no lidarseg labels."""
    if any(s.lidarseg_path is None for s in dataset.samples):
        raise ProbeError(f"{dataset.cfg.info_dir}: the {dataset.cfg.split} split has samples without lidarseg "
                         "labels; the 3D probe needs a dataset with lidarseg")
