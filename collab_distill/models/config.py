"""Config schemas of the models; :class:`ModelConfig` is the ``model:`` section of a run config.

Defaults are the small CPU presets; docs/models.md ("Config") shows the GPU-sized settings (DINOv2
ViT-S/14 teacher, SpUNet-sized LiDAR encoder) as a ``model:`` section, and ``configs/nuscenes/`` ships them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from collab_distill.ranges import NonNegativeInt, PositiveInt

#: ``ImageEncoderConfig.weights`` values that are not file paths.
WEIGHTS_HUB = "hub"
WEIGHTS_RANDOM = "random"


@dataclass
class ImageEncoderConfig:
    """A timm ViT used as teacher or student (both are built from the same section).

    ``weights`` must be set explicitly: a local ``.safetensors``/``.pth`` file (timm or original
    DINOv2 format), ``"hub"`` to let timm download its pretrained weights, or ``"random"``.
    """

    name: str = "vit_tiny_patch14_cpu"
    weights: str | None = None
    strict: bool = True              # missing/unexpected checkpoint keys are an error
    blocks: list[int] = field(default_factory=lambda: [-1])   # patch-map blocks; negative from the end
    norm: bool = True                # apply the final LayerNorm to the patch maps
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model kwargs
    # recompute each block in the backward pass instead of keeping its activations (timm's
    # set_grad_checkpointing), while the encoder trains; frozen or eval-mode encoders never do
    grad_checkpointing: bool = False


@dataclass
class PointEncoderConfig:
    """A spconv sparse UNet (SpUNet style) on voxelised LiDAR points.

    ``enc_widths``/``enc_depths`` give one entry per down-sampling stage (stride 2 each);
    ``dec_widths``/``dec_depths`` one entry per up-sampling stage, from coarse to fine. The output
    width is ``dec_widths[-1]``.
    """

    in_channels: PositiveInt = 5     # x, y, z, intensity, sweep time lag (voxel means; voxel size: data.voxel_size)
    stem_width: PositiveInt = 16
    enc_widths: list[PositiveInt] = field(default_factory=lambda: [16, 32, 64, 64])
    enc_depths: list[NonNegativeInt] = field(default_factory=lambda: [1, 1, 1, 1])
    dec_widths: list[PositiveInt] = field(default_factory=lambda: [64, 32, 32, 32])
    dec_depths: list[PositiveInt] = field(default_factory=lambda: [1, 1, 1, 1])  # >= 1: they fuse the skip


@dataclass
class HeadConfig:
    """Projection head from an encoder's width to the teacher's width."""

    kind: Literal["linear", "mlp"] = "linear"
    hidden_dim: NonNegativeInt = 0   # MLP hidden width; 0 means the output width


@dataclass
class ModelConfig:
    """The ``model:`` section of a run: image encoder (teacher and student), point encoder, head."""

    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    point: PointEncoderConfig = field(default_factory=PointEncoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
