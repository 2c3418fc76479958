"""Teacher pre-training for the embedded default (no DINOv2 weights can be downloaded here).

A ViT learns, on **clear** images only, to predict at each projected LiDAR point the point's
16-class lidarseg label (cross-entropy) and its log depth (L1), from bilinearly sampled patch
features: sparse, LiDAR-derived supervision that real nuScenes has too. It stands in for a
foundation model that was trained on clear daytime images; with ``--teacher-weights`` a real DINOv2
checkpoint replaces it.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from collab_distill.config import RunConfig
from collab_distill.data.taxonomy import COARSE_CLASSES, COARSE_IGNORE, fine_to_coarse_lut
from collab_distill.losses import grouped_mean
from collab_distill.methods.base import Method, MethodOutput
from collab_distill.methods.common import build_image_encoder, method_section, pair_samples
from collab_distill.methods.config import TeacherPretrainConfig
from collab_distill.models import ImageEncoder, sample_features, save_vit_weights


class TeacherPretrain(Method):
    """Trainable: ``encoder`` (the ViT), ``seg_head`` and ``depth_head`` (linear)."""

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__()
        self.encoder = build_image_encoder(cfg)
        dim = self.encoder.embed_dim
        self.seg_head = nn.Linear(dim, len(COARSE_CLASSES))
        self.depth_head = nn.Linear(dim, 1)
        self.register_buffer("lut", torch.from_numpy(fine_to_coarse_lut().astype("int64")), persistent=False)
        self.depth_weight = method_section(cfg, TeacherPretrainConfig).depth_weight

    def trainable_names(self) -> tuple[str, ...]:
        return ("encoder", "seg_head", "depth_head")

    def layer_decay_vit(self) -> ImageEncoder:
        return self.encoder

    def forward(self, batch: dict) -> MethodOutput:
        if "labels" not in batch:
            raise ValueError("teacher pre-training needs lidarseg labels (every sample of the split must have them)")
        fmap = self.encoder(batch["images"]).patch[-1]
        feats = sample_features(fmap, batch["pair_uv"], batch["pair_image"], self.encoder.patch_size)
        target = self.lut[batch["labels"][batch["pair_point"]]]
        samples = pair_samples(batch)
        num = len(batch["offsets"])
        ce = F.cross_entropy(self.seg_head(feats), target, ignore_index=COARSE_IGNORE, reduction="none")
        labelled = target != COARSE_IGNORE
        seg = grouped_mean(ce[labelled], samples[labelled], num)
        log_depth = self.depth_head(feats)[:, 0]
        depth = grouped_mean((log_depth - batch["pair_depth"].log()).abs(), samples, num)
        accuracy = (self.seg_head(feats).argmax(1)[labelled] == target[labelled]).float().mean()
        return MethodOutput(seg + self.depth_weight * depth,
                            {"seg_ce": seg.detach(), "depth_l1": depth.detach(), "pair_acc": accuracy.detach()})

    def export(self, weights_dir: Path) -> list[Path]:
        """Also write the ViT alone in timm format (``teacher_vit.safetensors``), usable as
        ``model.image.weights`` by every other run."""
        return [*super().export(weights_dir), save_vit_weights(self.encoder.vit, weights_dir / "teacher_vit.safetensors")]
