"""The ``method:`` section of a run config, one dataclass per method (docs/methods.md explains each choice).

``method.name`` picks the dataclass (through :data:`collab_distill.methods.registry.METHODS`), and a
key that the chosen method does not read is a config error. This module holds plain dataclasses
only, so the config loader can import it without importing any method.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from collab_distill.ranges import Momentum, NonNegativeFloat, PositiveFloat, PositiveInt, Severity, UnitInterval


@dataclass
class MethodSection:
    """What every method section has: ``name``, the method's key in the registry."""

    name: str = "stage1"


@dataclass
class TeacherPretrainConfig(MethodSection):
    """``teacher_pretrain``: class cross-entropy plus ``depth_weight`` times the log-depth L1."""

    name: str = "teacher_pretrain"
    depth_weight: NonNegativeFloat = 1.0


@dataclass
class TeacherSSLConfig(MethodSection):
    """``teacher_ssl``: DINO (CLS) + iBOT (masked patch tokens) self-distillation and masked-pixel prediction,
    images only (docs/methods.md)."""

    name: str = "teacher_ssl"
    dino_weight: NonNegativeFloat = 1.0       # DINO: CLS of one crop (student) vs the other crop (EMA teacher)
    ibot_weight: NonNegativeFloat = 1.0       # iBOT: masked patch tokens (student) vs the unmasked crop's (teacher)
    pixel_weight: NonNegativeFloat = 1.0      # SimMIM/MAE: the masked patches' pixels from the student's tokens
    out_dim: PositiveInt = 256                # prototypes of the projection head (shared by CLS and patch tokens)
    hidden_dim: PositiveInt = 512             # the head's MLP width
    bottleneck_dim: PositiveInt = 64          # the head's L2-normalised bottleneck before the prototypes
    student_temp: PositiveFloat = 0.1
    teacher_temp: PositiveFloat = 0.04        # sharpening of the teacher's distribution
    center_momentum: Momentum = 0.9           # centring of the teacher's logits (batch mean, all processes)
    ema_momentum: Momentum = 0.99             # the teacher is an EMA of the student
    crop_scale: tuple[UnitInterval, UnitInterval] = (0.35, 1.0)  # area fraction of the two global crops
    jitter: UnitInterval = 0.4                # +- brightness, contrast, saturation per crop
    mask_prob: UnitInterval = 0.5             # fraction of the student's crops that get a patch mask
    mask_ratio: tuple[UnitInterval, UnitInterval] = (0.1, 0.5)   # masked fraction of the patches of such a crop
    # a teacher_ssl run's weights/ folder whose teacher_head and pixel_head start the heads; with model.image.weights
    # its teacher_vit.safetensors, the run continues that teacher's objective (e.g. on all conditions); "": fresh heads
    init_from: str = ""


@dataclass
class Stage1Config(MethodSection):
    """``stage1``: the LiDAR encoder learns the frozen teacher's features at the projected pixels."""

    name: str = "stage1"
    # a teacher-feature store (tools/cache_teacher.py) to read the teacher's maps from; "" runs the teacher
    teacher_store: str = ""
    # 1 - cos averaged per sample, then over samples; or ScaLR's exact form, ||k - q||_2 of the
    # normalised features averaged over all pairs of the (per-process) batch (docs/methods.md)
    stage1_loss: Literal["cosine_per_sample", "scalr_l2"] = "cosine_per_sample"


@dataclass
class Stage2Config(MethodSection):
    """``stage2``: a 2D student anchored to the frozen stage-1 LiDAR features, in both directions."""

    name: str = "stage2"
    point_weights: str = ""                   # folder with the stage-1 point_encoder/head .safetensors
    anchor_weight: NonNegativeFloat = 1.0     # point -> pixel: student at projected pixels vs 3D features
    pixel_to_point_weight: NonNegativeFloat = 1.0  # pixel -> point: patch token vs mean 3D feature of its points
    retention_weight: NonNegativeFloat = 1.0  # student vs frozen teacher on clear images


@dataclass
class ImageDistillConfig(MethodSection):
    """The image-only baselines (``asymmetric``, ``self_distill``, ``teacher_plus``): CLS, patch-token and
    attention distillation between two views of each image."""

    name: str = "asymmetric"
    cls_weight: NonNegativeFloat = 1.0        # CLS-token cosine
    patch_weight: NonNegativeFloat = 1.0      # patch-token cosine (teacher vs student tokens)
    attn_weight: NonNegativeFloat = 1.0       # KL of CLS->patch attention
    attn_blocks: PositiveInt = 1              # last k blocks whose attention is matched
    degradations: list[str] = field(default_factory=lambda: [  # asymmetric, self_distill: the student's set
        "fog", "rain", "snow", "night", "gaussian_noise", "shot_noise", "motion_blur", "defocus_blur", "jpeg"])
    severities: list[Severity] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    ema_momentum: Momentum = 0.0              # >0 makes the teacher an EMA of the student
