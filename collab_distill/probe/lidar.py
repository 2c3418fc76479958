"""3D linear probe: what stage 1 taught the LiDAR encoder (ScaLR protocol, on frozen features).

The point encoder (a stage-1 export, or randomly initialised as the floor) is frozen; its per-point
features of the labelled points of the train split (all, or a seeded ``train.points_per_scan`` per
scan) are computed once, batched on ``device``, into a float16 store on disk
(:mod:`~collab_distill.probe.lidar_store`, built by :mod:`~collab_distill.probe.lidar_features`); a
head ``BatchNorm1d + zero-initialised Linear`` learns the 16-class lidarseg labels from mini-batches
streamed from the store, and is evaluated on every point of val, streamed scan batch by scan batch:
mIoU and per-class IoU overall and per condition tag, with the shared
:class:`~collab_distill.probe.metrics.ConfusionMatrix`. Nothing is held per split in memory.

It also reports the agreement of stage 1 with its target: the mean cosine between the stage-1 head's
3D features and the teacher's features at the projected pixels, per condition on val.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from collab_distill.config import DataConfig, ExperimentConfig, config_to_dict, git_revision, register_schema
from collab_distill.data.conditions import CONDITION_TAGS
from collab_distill.data.dataset import PairedDataset
from collab_distill.data.shards import META_FILE, sha256_file
from collab_distill.data.taxonomy import IGNORE, LIDARSEG_CLASSES
from collab_distill.models.config import ModelConfig
from collab_distill.probe.lidar_features import (
    build_point_store,
    check_labelled,
    encode,
    eval_labels,
    is_main_process,
    probe_device,
    scan_agreement,
    scan_batches,
    scan_slices,
    split_data,
)
from collab_distill.probe.lidar_store import PointChunks, PointStore
from collab_distill.probe.metrics import MIOU_CONVENTION, ConfusionMatrix
from collab_distill.probe.results import finite_or_none
from collab_distill.ranges import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

POINT_WEIGHTS_SETTING = "--point-weights (config key point_weights)"  # how a user sets it, for errors
RESULT_FILE = "lidar_seg.json"
RANDOM_INIT_NAME = "random_init"       # the result name of the random-initialisation floor
STORE_FOLDER = "train_points"          # the default store: <output_dir>/<name>/train_points


@dataclass
class LidarProbeTrainConfig:
    """The head's training set and optimisation (AdamW + cosine over ``epochs`` passes over the points)."""

    split: str = "train"
    epochs: PositiveInt = 30
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.003
    batch_points: PositiveInt = 65536  # points per optimiser step
    points_per_scan: NonNegativeInt = 0  # labelled points per training scan in the store (seeded); 0 = all
    chunk_scans: PositiveInt = 64      # scans whose points are shuffled together (memory: this many scans)
    feature_batch: PositiveInt = 4     # scans per encoder call (store build and evaluation)


@dataclass
class LidarProbeEvalConfig:
    """The evaluation set and what else to measure."""

    split: str = "val"
    agreement: bool = True             # also compute the stage-1 / teacher cosine per condition


@dataclass
class LidarProbeConfig:
    """A 3D linear probe run (``schema: lidar_probe``), shaped like :class:`~collab_distill.probe.config.ProbeConfig`.

    ``point_weights``: a stage-1 ``weights/`` folder, or empty for the random-initialisation floor
    (seeded by ``experiment.seed``). The result goes to :func:`lidar_result_path`, the training points'
    features to :func:`lidar_store_path`.
    """

    experiment: ExperimentConfig = field(default_factory=lambda: ExperimentConfig(name="", output_dir="runs/probes"))
    device: str = "cpu"              # where the point encoder, the teacher and the head run ("cuda" on a GPU)
    data: DataConfig = field(default_factory=lambda: DataConfig(conditions=["all"], cameras=["all"]))
    model: ModelConfig = field(default_factory=ModelConfig)
    point_weights: str = ""
    store: str = ""                  # the training-point store; "" = <experiment.output_dir>/<name>/train_points
    train: LidarProbeTrainConfig = field(default_factory=LidarProbeTrainConfig)
    eval: LidarProbeEvalConfig = field(default_factory=LidarProbeEvalConfig)


register_schema("lidar_probe", LidarProbeConfig)


def lidar_probe_name(cfg: LidarProbeConfig) -> str:
    """``experiment.name``, else ``<run>`` for ``point_weights`` ``.../<run>/weights``, else
    ``random_init`` (the floor)."""
    if cfg.experiment.name not in ("", "default"):
        return cfg.experiment.name
    if not cfg.point_weights:
        return RANDOM_INIT_NAME
    folder = Path(cfg.point_weights)
    return folder.parent.name if folder.name == "weights" and folder.parent.name else folder.name


def lidar_result_path(cfg: LidarProbeConfig) -> Path:
    """Where the result of ``cfg`` is written: ``<experiment.output_dir>/<name>/lidar_seg.json``."""
    return Path(cfg.experiment.output_dir) / lidar_probe_name(cfg) / RESULT_FILE


def lidar_store_path(cfg: LidarProbeConfig) -> Path:
    """The training-point store of ``cfg``: ``store``, else ``<experiment.output_dir>/<name>/train_points``."""
    return Path(cfg.store) if cfg.store else Path(cfg.experiment.output_dir) / lidar_probe_name(cfg) / STORE_FOLDER


def build_stage1(cfg: LidarProbeConfig) -> nn.Module:
    """The stage-1 modules (teacher, point encoder, head), loaded from ``point_weights`` when set."""
    from collab_distill.config import RunConfig
    from collab_distill.methods.common import load_module_weights
    from collab_distill.methods.config import Stage1Config
    from collab_distill.methods.stage1 import Stage1

    torch.manual_seed(cfg.experiment.seed)  # the random floor is reproducible
    run = RunConfig(data=cfg.data, model=cfg.model, method=Stage1Config())
    method = Stage1(run)
    if cfg.point_weights:
        load_module_weights(method.point_encoder, cfg.point_weights, "point_encoder", POINT_WEIGHTS_SETTING)
        load_module_weights(method.head, cfg.point_weights, "head", POINT_WEIGHTS_SETTING)
    method.point_encoder.freeze()
    method.head.freeze()
    return method.train(False)


class GroupMetrics:
    """mIoU, per-class IoU, points and samples overall and per condition tag (a scan counts for each of its
    tags), and the mean of the scans' stage-1 / teacher cosines: accumulated scan by scan, nothing kept
    per point."""

    def __init__(self) -> None:
        self.matrices: dict[str, ConfusionMatrix] = {}
        self.samples: dict[str, int] = {}
        self.cosine: dict[str, list[float]] = {}   # per group: sum of the scans' mean cosines, scans

    def update(self, pred: Tensor, labels: Tensor, tags: Sequence[str], cosine: float | None = None) -> None:
        """Count one scan: ``pred (n,)`` and ``labels (n,)`` (0..15 or ``IGNORE``), its condition ``tags``,
        and its mean cosine (None: not measured; ``nan``: no pair, which makes its groups' cosine None)."""
        for group in ("all", *tags):
            self.matrices.setdefault(group, ConfusionMatrix(len(LIDARSEG_CLASSES), IGNORE)).update(pred, labels)
            self.samples[group] = self.samples.get(group, 0) + 1
            if cosine is not None:
                total = self.cosine.setdefault(group, [0.0, 0])
                total[0], total[1] = total[0] + cosine, total[1] + 1

    def result(self) -> dict[str, Any]:
        """Per group (``all``, then the tags in ``CONDITION_TAGS`` order): ``miou``, ``accuracy``, ``points``,
        ``samples``, ``iou`` per class and ``stage1_teacher_cosine`` (None when not measured)."""
        out = {}
        for name in ["all", *[t for t in CONDITION_TAGS if t in self.matrices]]:
            cm, cos = self.matrices[name], self.cosine.get(name)
            out[name] = {"miou": finite_or_none(cm.miou()), "accuracy": finite_or_none(cm.accuracy()),
                         "points": cm.total, "samples": self.samples[name],
                         "iou": {c: finite_or_none(v) for c, v in zip(LIDARSEG_CLASSES, cm.iou().tolist())},
                         "stage1_teacher_cosine": finite_or_none(cos[0] / cos[1]) if cos else None}
        return out


def new_head(channels: int) -> nn.Sequential:
    """``BatchNorm1d + zero-initialised Linear`` from ``channels`` point features to the 16 classes."""
    head = nn.Sequential(nn.BatchNorm1d(channels), nn.Linear(channels, len(LIDARSEG_CLASSES)))
    nn.init.zeros_(head[1].weight)
    nn.init.zeros_(head[1].bias)
    return head


def point_batches(chunks: PointChunks, batch_points: int, workers: int, device: torch.device
                  ) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of mini-batches ``(features (b, C) float32, labels (b,) int64)`` on ``device``: the seeded
    chunks (read in ``workers`` DataLoader workers) cut into ``batch_points`` points, the rest of a chunk
    carried into the next, so every batch but the epoch's last is full."""
    loader = DataLoader(chunks, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda")
    carry = (torch.zeros(0, chunks.store.channels, dtype=torch.float16), torch.zeros(0, dtype=torch.int64))
    for features, labels in loader:
        if len(carry[1]):
            features, labels = torch.cat([carry[0], features]), torch.cat([carry[1], labels])
        full = len(labels) - len(labels) % batch_points
        for start in range(0, full, batch_points):
            yield (features[start:start + batch_points].to(device, non_blocking=True).float(),
                   labels[start:start + batch_points].to(device, non_blocking=True))
        carry = features[full:], labels[full:]
    if len(carry[1]):
        yield carry[0].to(device).float(), carry[1].to(device)


def train_head(store: PointStore, cfg: LidarProbeTrainConfig, seed: int = 0, device: str | torch.device = "cpu",
               workers: int = 0, progress: bool = True) -> nn.Module:
    """``BatchNorm1d + zero-initialised Linear`` trained with AdamW + cross-entropy (cosine schedule over
    ``epochs`` passes) on the store's points, streamed in mini-batches of ``batch_points`` (``seed``: the
    order); memory is ``chunk_scans`` scans, whatever the store's size."""
    device = torch.device(device)
    head = new_head(store.channels).to(device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(store.points / cfg.batch_points))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs * steps_per_epoch)
    chunks = PointChunks(store, cfg.chunk_scans, seed)
    head.train()
    for epoch in tqdm(range(cfg.epochs), desc="3D probe", disable=not progress):
        chunks.set_epoch(epoch)
        for x, y in point_batches(chunks, cfg.batch_points, workers, device):
            loss = nn.functional.cross_entropy(head(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return head.eval()


@torch.no_grad()
def evaluate(method: nn.Module, head: nn.Module, cfg: LidarProbeConfig, progress: bool = True) -> dict[str, Any]:
    """The probe on every point of ``eval.split``, scans streamed through the encoder ``train.feature_batch``
    at a time (images decoded only for ``eval.agreement``): :meth:`GroupMetrics.result`."""
    device = probe_device(cfg.device)
    dataset = PairedDataset(split_data(cfg, cfg.eval.split), seed=cfg.experiment.seed, train=False,
                            with_images=cfg.eval.agreement)
    check_labelled(dataset)
    method.to(device)
    head.to(device)
    metrics = GroupMetrics()
    batches = scan_batches(dataset, range(len(dataset)), cfg.train.feature_batch, cfg.data.num_workers, device)
    for rows, batch in tqdm(batches, total=math.ceil(len(dataset) / cfg.train.feature_batch),
                            desc=f"3D probe ({cfg.eval.split})", disable=not progress):
        features = encode(method, batch, device)
        pred, labels = head(features).argmax(1).cpu(), eval_labels(batch["labels"])
        cosine = scan_agreement(method, batch, features, device).tolist() if cfg.eval.agreement else [None] * len(rows)
        for row, part, cos in zip(rows, scan_slices(batch["offsets"]), cosine):
            metrics.update(pred[part], labels[part], dataset.samples[row].conditions, cos)
    return metrics.result()


def run_lidar_probe(cfg: LidarProbeConfig, *, progress: bool = True, overwrite: bool = False
                    ) -> dict[str, Any] | None:
    """Build (or reuse) the training-point store, train the head on it, evaluate on ``eval.split``; the
    result dict (named :func:`lidar_probe_name`; written by the caller to :func:`lidar_result_path`) carries
    the recipe, so it can be repeated. ``overwrite`` replaces a store of another encoder, data or subsample
    at :func:`lidar_store_path`. Under ``accelerate launch`` every process builds its shard of the store;
    the others return None, the main process trains and evaluates.

    Raises:
        PointStoreError: the store at :func:`lidar_store_path` is of something else (without ``overwrite``).
    """
    t0 = time.perf_counter()
    method = build_stage1(cfg)
    seed = cfg.experiment.seed
    store = build_point_store(cfg, method, lidar_store_path(cfg), overwrite=overwrite, progress=progress)
    if not is_main_process():
        return None
    head = train_head(store, cfg.train, seed, probe_device(cfg.device), cfg.data.num_workers, progress)
    results = evaluate(method, head, cfg, progress)
    return {"name": lidar_probe_name(cfg), "task": "lidar_seg", "protocol": "linear (per point)",
            "encoder": {"weights": cfg.point_weights or "random init (floor)", "architecture": "spconv UNet",
                        "weights_sha256": store.meta["encoder"]["weights_sha256"]},
            "results": results, "classes": list(LIDARSEG_CLASSES),
            "recipe": {"head": "BatchNorm1d + zero-initialised Linear", "loss": "cross-entropy",
                       "miou": MIOU_CONVENTION, "optimizer": "AdamW + cosine", "epochs": cfg.train.epochs,
                       "lr": cfg.train.lr, "weight_decay": cfg.train.weight_decay,
                       "batch_points": cfg.train.batch_points, "seed": seed,
                       "points_per_scan": cfg.train.points_per_scan or "all labelled points",
                       "augmentation": "none: features are computed once per sample (frozen encoder)",
                       "store": {"path": str(store.path), "meta_sha256": sha256_file(store.path / META_FILE),
                                 "dtype": "float16"},
                       "train_points": store.points, "train_samples": store.rows,
                       "eval_samples": results["all"]["samples"], "config": config_to_dict(cfg),
                       "git_sha": git_revision()},
            "seconds": time.perf_counter() - t0}
