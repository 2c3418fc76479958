"""3D linear probe: what stage 1 taught the LiDAR encoder (ScaLR protocol, on frozen features).

The point encoder (a stage-1 export, or randomly initialised as the floor) is frozen; its per-point
features are computed once per sample; a head ``BatchNorm1d + zero-initialised Linear`` learns the
16-class lidarseg labels on the train split and is evaluated on val: mIoU and per-class IoU overall
and per condition tag, with the shared :class:`~collab_distill.probe.metrics.ConfusionMatrix`.

It also reports the agreement of stage 1 with its target: the mean cosine between the stage-1 head's
3D features and the teacher's features at the projected pixels, per condition on val.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from collab_distill.config import DataConfig, ExperimentConfig, config_to_dict, git_revision, register_schema
from collab_distill.data.collate import Collate
from collab_distill.data.conditions import CONDITION_TAGS
from collab_distill.data.dataset import PairedDataset
from collab_distill.data.taxonomy import IGNORE, LIDARSEG_CLASSES, fine_to_eval_lut
from collab_distill.data.voxelize import Voxels
from collab_distill.losses import cosine_distance
from collab_distill.models import sample_features
from collab_distill.models.config import ModelConfig
from collab_distill.probe.config import ProbeError
from collab_distill.probe.metrics import MIOU_CONVENTION, ConfusionMatrix
from collab_distill.probe.results import finite_or_none
from collab_distill.ranges import NonNegativeFloat, PositiveFloat, PositiveInt

POINT_WEIGHTS_SETTING = "--point-weights (config key point_weights)"  # how a user sets it, for errors
RESULT_FILE = "lidar_seg.json"
RANDOM_INIT_NAME = "random_init"       # the result name of the random-initialisation floor


@dataclass
class LidarProbeTrainConfig:
    """The head's training set and optimisation (AdamW + cosine over ``epochs`` passes over the points)."""

    split: str = "train"
    epochs: PositiveInt = 30
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.003
    batch_points: PositiveInt = 65536  # points per optimiser step


@dataclass
class LidarProbeEvalConfig:
    """The evaluation set and what else to measure."""

    split: str = "val"
    agreement: bool = True             # also compute the stage-1 / teacher cosine per condition


@dataclass
class LidarProbeConfig:
    """A 3D linear probe run (``schema: lidar_probe``), shaped like :class:`~collab_distill.probe.config.ProbeConfig`.

    ``point_weights``: a stage-1 ``weights/`` folder, or empty for the random-initialisation floor
    (seeded by ``experiment.seed``). The result goes to :func:`lidar_result_path`.
    """

    experiment: ExperimentConfig = field(default_factory=lambda: ExperimentConfig(name="", output_dir="runs/probes"))
    data: DataConfig = field(default_factory=lambda: DataConfig(conditions=["all"], cameras=["all"]))
    model: ModelConfig = field(default_factory=ModelConfig)
    point_weights: str = ""
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


def _split_data(cfg: LidarProbeConfig, split: str) -> DataConfig:
    return dataclasses.replace(cfg.data, split=split, augment=False, max_points=0, image_dtype="float32")


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


@torch.no_grad()
def extract(method: nn.Module, data: DataConfig, seed: int, agreement: bool, progress: bool = True
            ) -> dict[str, Any]:
    """Per-point features, probe labels and condition tags of every sample of a split.

    Returns:
        ``features (N, C)``, ``labels (N,)`` (0..15 or IGNORE), ``sample (N,)``, ``tags`` (per sample),
        and with ``agreement`` the per-sample mean cosine between 3D and teacher features.
    """
    dataset = PairedDataset(data, seed=seed, train=False)
    if any(s.lidarseg_path is None for s in dataset.samples):
        raise ProbeError(f"{data.info_dir}: the {data.split} split has samples without lidarseg labels; "
                         "the 3D probe needs a dataset with lidarseg")
    collate, fine = Collate(data.voxel_size), torch.from_numpy(fine_to_eval_lut())
    lut = torch.cat([fine, fine.new_full((IGNORE + 1 - len(fine),), IGNORE)])  # sweep rows' IGNORE stays IGNORE
    feats, labels, owner, tags, cosines = [], [], [], [], []
    for i in tqdm(range(len(dataset)), desc=f"features ({data.split})", disable=not progress):
        batch = collate([dataset[i]])
        point_feats = method.point_encoder(Voxels.from_batch(batch))
        feats.append(point_feats)
        labels.append(lut[batch["labels"]])
        owner.append(torch.full((len(point_feats),), i))
        tags.append(dataset.samples[i].conditions)
        if agreement:
            teacher = sample_features(method.teacher_maps(batch), batch["pair_uv"], batch["pair_image"],
                                      method.teacher.patch_size)
            cos = 1 - cosine_distance(method.head(point_feats)[batch["pair_point"]], teacher)
            cosines.append(float(cos.mean()) if len(cos) else math.nan)
    return {"features": torch.cat(feats), "labels": torch.cat(labels), "sample": torch.cat(owner), "tags": tags,
            "cosine": cosines}


def train_head(features: Tensor, labels: Tensor, cfg: LidarProbeTrainConfig, seed: int = 0, progress: bool = True
               ) -> nn.Module:
    """``BatchNorm1d + zero-initialised Linear`` trained with AdamW + cross-entropy on labelled points
    (``seed``: the order of the points)."""
    keep = labels != IGNORE
    x, y = features[keep], labels[keep]
    gen = torch.Generator().manual_seed(seed)
    head = nn.Sequential(nn.BatchNorm1d(x.shape[1]), nn.Linear(x.shape[1], len(LIDARSEG_CLASSES)))
    nn.init.zeros_(head[1].weight)
    nn.init.zeros_(head[1].bias)
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(x) / cfg.batch_points))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs * steps_per_epoch)
    head.train()
    for _ in tqdm(range(cfg.epochs), desc="3D probe", disable=not progress):
        order = torch.randperm(len(x), generator=gen)
        for chunk in order.split(cfg.batch_points):
            loss = nn.functional.cross_entropy(head(x[chunk]), y[chunk])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return head.eval()


def evaluate(head: nn.Module, split: dict[str, Any]) -> dict[str, Any]:
    """mIoU and per-class IoU overall and per condition tag (a sample counts for each of its tags)."""
    with torch.no_grad():
        pred = head(split["features"]).argmax(1)
    groups = {"all": list(range(len(split["tags"])))}
    for i, tags in enumerate(split["tags"]):
        for tag in tags:
            groups.setdefault(tag, []).append(i)
    out = {}
    for name in ["all", *[t for t in CONDITION_TAGS if t in groups]]:
        mask = torch.isin(split["sample"], torch.tensor(groups[name]))
        cm = ConfusionMatrix(len(LIDARSEG_CLASSES), IGNORE)
        cm.update(pred[mask], split["labels"][mask])
        cos = [split["cosine"][i] for i in groups[name]] if split["cosine"] else []
        out[name] = {"miou": finite_or_none(cm.miou()), "accuracy": finite_or_none(cm.accuracy()),
                     "points": cm.total, "samples": len(groups[name]),
                     "iou": {c: finite_or_none(v) for c, v in zip(LIDARSEG_CLASSES, cm.iou().tolist())},
                     "stage1_teacher_cosine": finite_or_none(sum(cos) / len(cos)) if cos else None}
    return out


def run_lidar_probe(cfg: LidarProbeConfig, *, progress: bool = True) -> dict[str, Any]:
    """Extract features, train the head on ``train.split``, evaluate on ``eval.split``; the result dict
    (named :func:`lidar_probe_name`; written by the caller to :func:`lidar_result_path`) carries the
    recipe, so it can be repeated."""
    t0 = time.perf_counter()
    method = build_stage1(cfg)
    seed = cfg.experiment.seed
    train = extract(method, _split_data(cfg, cfg.train.split), seed, agreement=False, progress=progress)
    val = extract(method, _split_data(cfg, cfg.eval.split), seed, agreement=cfg.eval.agreement, progress=progress)
    head = train_head(train["features"], train["labels"], cfg.train, seed, progress)
    return {"name": lidar_probe_name(cfg), "task": "lidar_seg", "protocol": "linear (per point)",
            "encoder": {"weights": cfg.point_weights or "random init (floor)", "architecture": "spconv UNet"},
            "results": evaluate(head, val), "classes": list(LIDARSEG_CLASSES),
            "recipe": {"head": "BatchNorm1d + zero-initialised Linear", "loss": "cross-entropy",
                       "miou": MIOU_CONVENTION, "optimizer": "AdamW + cosine", "epochs": cfg.train.epochs,
                       "lr": cfg.train.lr, "weight_decay": cfg.train.weight_decay,
                       "batch_points": cfg.train.batch_points, "seed": seed,
                       "augmentation": "none: features are computed once per sample (frozen encoder)",
                       "train_points": int((train["labels"] != IGNORE).sum()), "train_samples": len(train["tags"]),
                       "eval_samples": len(val["tags"]), "config": config_to_dict(cfg), "git_sha": git_revision()},
            "seconds": time.perf_counter() - t0}
