"""The probe schema: :class:`ProbeConfig` (``configs/probe/*.yaml``, ``schema: probe``), loaded with
``collab_distill.config.load_config(path, overrides, schema=ProbeConfig)``.

One schema serves both tasks; ``task`` says which head is trained. The data section describes the
*training* set (``data.split``, ``data.conditions``: ``[clear]`` trains on clear scenes only, the
robustness-gap setting); ``eval`` describes the evaluation set, always reported per condition tag.
Every field here is written into each result JSON (the probe recipe).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from collab_distill.config import DataConfig, ExperimentConfig, check_config, register_schema
from collab_distill.data.corruptions import DEFAULT_SEVERITY, available_eval_corruptions
from collab_distill.errors import UserError
from collab_distill.models.config import ModelConfig
from collab_distill.ranges import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Range, Severity


class ProbeError(UserError, ValueError):
    """A probe set-up that cannot run; the message says what to change."""


@dataclass
class ProbeHeadConfig:
    """Which encoder features the linear head reads, and the head itself.

    DINOv2 protocols: seg ``linear`` = ``blocks [-1], norm true, cls_token false, upsample 1,
    batch_norm true``; ``+ms`` = ``blocks [-4, -3, -2, -1]``; depth ``lin.1`` = ``blocks [-1],
    norm false, cls_token true, upsample 4, batch_norm false``; ``lin.4`` = four evenly spaced blocks.
    """

    blocks: list[int] = field(default_factory=lambda: [-1])  # concatenated; negative counts from the end
    norm: bool = True                # final LayerNorm on the tokens of every block
    cls_token: bool = False          # concatenate each block's CLS token to every patch token
    upsample: PositiveInt = 1        # bilinear upsampling of the token map before the 1x1 conv
    batch_norm: bool = True          # BatchNorm2d before the 1x1 conv
    num_bins: Annotated[int, Range(ge=2)] = 256  # depth: uniform bins in [min_depth, max_depth]
    min_depth: PositiveFloat = 0.001  # depth: metres; predictions are clamped to the range at evaluation
    max_depth: PositiveFloat = 80.0   # depth: metres; also the largest ground truth that counts


@dataclass
class ProbeTrainConfig:
    """The head's optimisation: AdamW, linear warm-up then cosine decay, per iteration."""

    iterations: PositiveInt = 1000
    batch_size: PositiveInt = 8      # images per step
    lr: PositiveFloat = 1.0e-3
    weight_decay: NonNegativeFloat = 1.0e-4
    warmup: NonNegativeInt = 50      # iterations of linear warm-up
    gradient_loss_weight: NonNegativeFloat = 0.5  # depth: SigLoss + w * gradient loss
    max_samples: NonNegativeInt = 0  # >0: a seeded subset of the training samples (keyframes or folder images)
    feature_batch: PositiveInt = 2   # samples per encoder call while a store is built (a keyframe brings its cameras)


@dataclass
class ProbeEvalConfig:
    """The evaluation set (nuScenes-format data: info files of ``split``) and what else to measure."""

    split: str = "val"
    conditions: list[str] = field(default_factory=lambda: ["all"])  # samples evaluated; results are per tag
    fidelity: bool = True            # cosine between the encoder (adverse) and the teacher (clear render)
    showcase: NonNegativeInt = 2     # views per condition set saved for the report's figures (0: none)
    corruptions: list[str] = field(default_factory=list)  # evaluation-only corruptions (data/corruptions.py):
    corruption_severity: Severity = DEFAULT_SEVERITY      # the same head on the corrupted eval views, a row each
    corruption_max_samples: NonNegativeInt = 0  # >0: a seeded subset of the eval samples for those rows (and clean)
    train_views: NonNegativeInt = 2000  # train_results (did the head fit?) on at most this many training views
                                        # (a seeded subset; 0 = all: a whole pass over the training store)


@dataclass
class GroundTruthConfig:
    """How projected LiDAR points become sparse per-pixel ground truth (nuScenes-format data)."""

    drop_noise_depth: bool = True    # drop points labelled lidarseg 'noise' (rain, fog, snow returns) from depth


@dataclass
class FolderConfig:
    """A generic folder set instead of nuScenes-format data (see docs/probes.md for the layout)."""

    root: str = ""                   # non-empty: read <root>/<split>/images + labels/ or depth/
    num_classes: NonNegativeInt = 0  # seg: number of classes (label values 0..num_classes-1)
    class_names: list[str] = field(default_factory=list)
    ignore_index: int = 255          # seg: label value of unlabelled pixels
    depth_scale: PositiveFloat = 256.0  # depth: PNG value per metre (KITTI 256, NYUv2 1000); 0 = invalid


@dataclass
class ProbeStoreConfig:
    """Where the probe feature stores live (:mod:`collab_distill.probe.store`): one folder per identity
    (encoder weights, architecture, image size, blocks, views), found and reused by every probe that
    reads the same features (seg and depth, every recipe on the same blocks)."""

    dir: str = ""                    # folder of the stores, one <identity sha256> folder each; "": <output_dir>/stores
    train: str = ""                  # an explicit store of the training views (refused if its identity differs)
    eval: str = ""                   # an explicit store of the evaluation views (refused if its identity differs)


@dataclass
class ProbeConfig:
    """Top-level schema of a probe run (``tools/probe_seg.py``, ``tools/probe_depth.py``)."""

    task: Literal["seg", "depth"] = "seg"
    device: str = "cpu"              # where the frozen encoder runs ("cuda" on a GPU); heads train on the CPU
    experiment: ExperimentConfig = field(default_factory=lambda: ExperimentConfig(name="", output_dir="runs/probes"))
    encoder: str = ""                # weights probed; "" = model.image.weights (the teacher itself)
    data: DataConfig = field(default_factory=lambda: DataConfig(conditions=["all"], cameras=["all"]))
    model: ModelConfig = field(default_factory=ModelConfig)  # model.image: architecture + teacher weights
    head: ProbeHeadConfig = field(default_factory=ProbeHeadConfig)
    train: ProbeTrainConfig = field(default_factory=ProbeTrainConfig)
    eval: ProbeEvalConfig = field(default_factory=ProbeEvalConfig)
    gt: GroundTruthConfig = field(default_factory=GroundTruthConfig)
    folder: FolderConfig = field(default_factory=FolderConfig)
    store: ProbeStoreConfig = field(default_factory=ProbeStoreConfig)


register_schema("probe", ProbeConfig)


def protocol_name(cfg: ProbeConfig) -> str:
    """The DINOv2 protocol ``cfg`` reproduces (``linear``, ``linear+ms``, ``lin.1``, ``lin.4``) or ``custom``."""
    h = cfg.head
    if cfg.task == "seg" and h.norm and not h.cls_token and h.upsample == 1 and h.batch_norm:
        return {(-1,): "linear", (-4, -3, -2, -1): "linear+ms"}.get(tuple(h.blocks), "custom")
    if cfg.task == "depth" and not h.norm and h.cls_token and h.upsample == 4 and not h.batch_norm:
        return {1: "lin.1", 4: "lin.4"}.get(len(h.blocks), "custom")
    return "custom"


def check_probe_config(cfg: ProbeConfig, patch_size: int = 14) -> None:
    """Raise :class:`ProbeError` for settings that would fail later (or silently mean nothing); a value
    out of its schema range is a ``ConfigError``, also for a config built in code."""
    check_config(cfg, "probe config")
    height, width = cfg.data.image_size
    if height % patch_size or width % patch_size:
        raise ProbeError(f"data.image_size {[height, width]} must be multiples of the patch size {patch_size}")
    if not cfg.head.blocks:
        raise ProbeError("head.blocks must name at least one block")
    if cfg.task == "depth" and not cfg.head.min_depth < cfg.head.max_depth:
        raise ProbeError(f"depth range needs head.min_depth < head.max_depth, got "
                         f"{cfg.head.min_depth}, {cfg.head.max_depth}")
    if cfg.eval.fidelity and not cfg.folder.root and not cfg.model.image.weights:
        raise ProbeError("eval.fidelity needs the teacher: set model.image.weights (--teacher) or eval.fidelity=false")
    if cfg.folder.root and cfg.task == "seg" and cfg.folder.num_classes < 1:
        raise ProbeError("folder.num_classes must be set for a segmentation folder set")
    unknown = [name for name in cfg.eval.corruptions if name not in available_eval_corruptions()]
    if unknown or len(set(cfg.eval.corruptions)) < len(cfg.eval.corruptions):
        wrong = f"unknown {unknown[0]!r}" if unknown else "a name twice"
        raise ProbeError(f"eval.corruptions {cfg.eval.corruptions}: {wrong}; names: "
                         f"{', '.join(available_eval_corruptions())} (each at most once)")
