"""The probe phases of ``bench/scale.py`` (issue 16): each runs in a fresh child process on the tiled info
folder of one N, and writes its results with ``report``.

* ``probe-build`` / ``lidar-build``: the library's builders (``probe.stores.probe_store`` for the 2D probes'
  training views, ``probe.lidar_features.build_point_store`` for the 3D probe's training scans) over
  every view / scan of N samples, computing only the first ``--slice`` images (2D) or ``--slice / 6``
  scans (3D): the builders cannot build part of a store, so the bench narrows the builder's item
  dataset / scan batches, as it narrows the teacher store's images; the rest is completed as holes
  (:func:`complete_with_holes`).
* ``probe-heads`` / ``lidar-head``: the seg and depth heads (``--head-iterations`` each; every batch reads
  computed views, see :func:`child_probe_heads`) and the 3D head (one epoch over every scan, most of them
  empty), streamed from those stores by the library's loops with 2 DataLoader workers.
* ``probe-today`` / ``lidar-today``: the paths the stores replaced, re-created here as they were (the
  2D probes' in-RAM ``FeatureBank``: float16 patch maps and dense label and depth maps of every view;
  the 3D probe's in-RAM features and labels of every point, ``torch.cat``-ed), run on the same slice;
  their bytes per view / point give what they hold for all of N (extrapolated).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

CAMERAS = 6
WORKERS = 2


def complete_with_holes(store: Path, fields_of: Callable[[dict[str, Any]], Sequence[Any]], error: type) -> dict:
    """Finish the build of ``store`` after a slice: every shard's remaining rows marked written, fixed fields
    as holes of the sparse files (they read as zeros), ragged fields as empty rows (their ends repeat the
    last one); then ``finish_build``. Returns the build's meta."""
    from collab_distill.data.shards import ShardWriter, finish_build, partial_path, read_build_meta

    folder = partial_path(store)
    meta = read_build_meta(folder)
    fields = fields_of(meta)
    for rank in range(meta["processes"]):
        writer = ShardWriter(folder, rank, meta["processes"], meta["rows"], fields)
        for field in fields:
            if field.ragged:
                ends = np.full(writer.size - writer.done, writer.elements[field.name], np.int64)
                os.pwrite(writer.fixed[field.name], ends.tobytes(), writer.done * 8)
        writer.done = writer.size
        writer.commit()
        writer.close()
    finish_build(folder, store, error)
    return meta


def probe_configs(args: argparse.Namespace) -> tuple[Any, Any]:
    """The seg and depth probe configs (the shipped CPU recipes, a random tiny ViT) on the tiled infos."""
    from collab_distill.config import load_config
    from collab_distill.probe.config import ProbeConfig

    common = [f"data.info_dir={args.info_dir}", "data.split=train", "data.conditions=[all]", "data.cameras=[all]",
              f"data.num_workers={WORKERS}", "train.feature_batch=2", f"train.iterations={args.head_iterations}",
              f"store.dir={args.work / 'probe_stores'}", f"experiment.output_dir={args.work / 'probes'}",
              "model.image.weights=random", "eval.fidelity=false", "eval.showcase=0"]
    return tuple(load_config(f"configs/probe/{name}.yaml", common, schema=ProbeConfig)
                 for name in ("seg_linear", "depth_linear"))


def _raw_encoder(cfg: Any) -> Callable[[], Any]:
    from collab_distill.probe.encoder import load_encoder

    return lambda: load_encoder(dataclasses.replace(cfg.model.image, norm=False), "random",
                                tuple(cfg.data.image_size), cfg.experiment.seed)


def child_probe_build(args: argparse.Namespace, report: Callable[..., None]) -> None:
    """The 2D probes' training-view store of N x 6 views, the first ``--slice`` computed."""
    import time

    import collab_distill.probe.store_build as builder
    from collab_distill.probe.run import build_views
    from collab_distill.probe.store import ProbeStoreError, store_fields
    from collab_distill.probe.stores import probe_store, store_identity, store_location

    limit = max(1, args.slice // CAMERAS)   # keyframes, six views each

    class SliceItems(builder._SparseItems):
        """The builder's items, the first ``--slice`` views only."""

        def __len__(self) -> int:
            return min(limit, len(self.items))

    builder._SparseItems = SliceItems
    cfg, _ = probe_configs(args)
    start = time.perf_counter()
    try:
        probe_store(cfg, "random", True, build_views(cfg, train=True), _raw_encoder(cfg), progress=False)
    except ProbeStoreError as exc:   # finish_build: "shard 0 has <slice> of <rows> rows", as after a kill
        if " of " not in str(exc) or "rows" not in str(exc):
            raise
    built = time.perf_counter() - start
    path = store_location(cfg, store_identity(cfg, "random", True), True)
    meta = complete_with_holes(path, lambda m: store_fields(m["patch_shape"]), ProbeStoreError)
    report(views=meta["rows"], patch_shape=meta["patch_shape"], computed=limit * CAMERAS, build_s=built,
           store=str(path))


def child_probe_heads(args: argparse.Namespace, report: Callable[..., None]) -> None:
    """The seg and depth heads, ``--head-iterations`` each, streamed from the store of ``probe-build``. The
    library's seeded batches over all N x 6 views are kept, each view index taken modulo the computed
    slice, so every batch reads computed views (with their targets) at every N, not holes."""
    import time

    import collab_distill.probe.train as trainer
    from collab_distill.data.taxonomy import LIDARSEG_CLASSES
    from collab_distill.probe.run import build_task
    from collab_distill.probe.store import ProbeStore
    from collab_distill.probe.stores import store_identity, store_location
    from collab_distill.probe.train import StoreViews, train_head

    computed = max(1, args.slice // CAMERAS) * CAMERAS

    class SliceBatches(trainer.SeededBatches):
        def __iter__(self):
            for batch in super().__iter__():
                yield [i % computed for i in batch]

    trainer.SeededBatches = SliceBatches

    seconds = {}
    for cfg in probe_configs(args):
        store = ProbeStore(store_location(cfg, store_identity(cfg, "random", True), True))
        start = time.perf_counter()
        train_head(build_task(cfg, LIDARSEG_CLASSES), StoreViews(store, cfg.head.norm, cfg.head.cls_token), cfg.train,
                   seed=0, num_workers=WORKERS, progress=False)
        seconds[cfg.task] = time.perf_counter() - start
    report(views=len(store), head_s=seconds)


def child_probe_today(args: argparse.Namespace, report: Callable[..., None]) -> None:
    """Today's 2D path before the store, on the slice: a ``FeatureBank`` of every view in RAM (the
    encoder's float16 patch maps with the final norm, dense uint8 label and float32 depth maps)."""
    import torch
    from torch.utils.data import DataLoader, Subset

    from collab_distill.probe.data import collate_views
    from collab_distill.probe.encoder import load_encoder
    from collab_distill.probe.run import build_views

    cfg, _ = probe_configs(args)
    views = build_views(cfg, train=True)
    encoder = load_encoder(cfg.model.image, "random", tuple(cfg.data.image_size), cfg.experiment.seed)
    limit = max(1, args.slice // CAMERAS)
    loader = DataLoader(Subset(views, range(min(limit, len(views)))), batch_size=2, collate_fn=collate_views,
                        num_workers=WORKERS)
    patches, labels, depths = [], [], []
    with torch.no_grad():
        for batch in loader:
            patches.append(encoder(torch.stack([v.image for v in batch])).patch[-1].to(torch.float16))
            labels += [v.label for v in batch]
            depths += [v.depth for v in batch]
    bank = (torch.cat(patches), torch.stack(labels), torch.stack(depths))
    nbytes = sum(t.numel() * t.element_size() for t in bank)
    report(views=len(bank[0]), bank_bytes=nbytes, bytes_per_view=nbytes / len(bank[0]))


def lidar_config(args: argparse.Namespace) -> Any:
    """The 3D probe's config (the shipped CPU recipe, random point encoder) on the tiled infos."""
    from collab_distill.config import load_config
    from collab_distill.probe.lidar import LidarProbeConfig

    return load_config("configs/probe_lidar/synthetic.yaml",
                       [f"data.info_dir={args.info_dir}", "data.conditions=[all]", f"data.num_workers={WORKERS}",
                        "train.split=train", "train.epochs=1", "train.feature_batch=2", "eval.agreement=false",
                        f"store={args.work / 'points'}", f"experiment.output_dir={args.work / 'probes'}"],
                       schema=LidarProbeConfig)


def child_lidar_build(args: argparse.Namespace, report: Callable[..., None]) -> None:
    """The 3D probe's training-point store of N scans, the first ``--slice / 6`` scans computed."""
    import time

    import collab_distill.probe.lidar_features as builder
    from collab_distill.probe.lidar import build_stage1
    from collab_distill.probe.lidar_store import PointStoreError, point_fields

    cfg = lidar_config(args)
    limit = max(1, args.slice // CAMERAS)
    batches, scans = builder.scan_batches, -(-limit // cfg.train.feature_batch)
    builder.scan_batches = lambda *a, **k: itertools.islice(batches(*a, **k), scans)
    start = time.perf_counter()
    try:
        builder.build_point_store(cfg, build_stage1(cfg), Path(cfg.store), progress=False)
    except PointStoreError as exc:   # finish_build after the slice, as after a kill
        if " of " not in str(exc) or "rows" not in str(exc):
            raise
    built = time.perf_counter() - start
    meta = complete_with_holes(Path(cfg.store), lambda m: point_fields(m["channels"]), PointStoreError)
    report(scans=meta["rows"], computed=scans * cfg.train.feature_batch, build_s=built)


def child_lidar_head(args: argparse.Namespace, report: Callable[..., None]) -> None:
    """The 3D head, one epoch streamed from the store of ``lidar-build``."""
    import time

    from collab_distill.probe.lidar import train_head
    from collab_distill.probe.lidar_store import PointStore

    cfg = lidar_config(args)
    store = PointStore(cfg.store)
    start = time.perf_counter()
    train_head(store, cfg.train, seed=0, workers=WORKERS, progress=False)
    report(scans=store.rows, points=store.points, head_s=time.perf_counter() - start)


def child_lidar_today(args: argparse.Namespace, report: Callable[..., None]) -> None:
    """Today's 3D path before the store, on the slice: every point's features and labels in RAM, one
    scan at a time, ``torch.cat``-ed (as ``probe/lidar.py::extract`` did)."""
    import torch

    from collab_distill.data.collate import Collate
    from collab_distill.data.dataset import PairedDataset
    from collab_distill.data.voxelize import Voxels
    from collab_distill.probe.lidar import build_stage1
    from collab_distill.probe.lidar_features import eval_labels, split_data

    cfg = lidar_config(args)
    method = build_stage1(cfg)
    dataset = PairedDataset(split_data(cfg, "train"), seed=0, train=False)   # with images, as it was
    collate = Collate(cfg.data.voxel_size)
    feats, labels = [], []
    with torch.no_grad():
        for i in range(min(max(1, args.slice // CAMERAS), len(dataset))):
            batch = collate([dataset[i]])
            feats.append(method.point_encoder(Voxels.from_batch(batch)))
            labels.append(eval_labels(batch["labels"]))
    features, labels_ = torch.cat(feats), torch.cat(labels)
    nbytes = features.numel() * features.element_size() + labels_.numel() * labels_.element_size()
    report(scans=len(feats), points=len(labels_), held_bytes=nbytes, bytes_per_point=nbytes / len(labels_),
           channels=features.shape[1])


CHILDREN = {"probe-build": child_probe_build, "probe-heads": child_probe_heads, "probe-today": child_probe_today,
            "lidar-build": child_lidar_build, "lidar-head": child_lidar_head, "lidar-today": child_lidar_today}
