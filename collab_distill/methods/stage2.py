"""Stage 2 (3D-anchored distillation): a 2D student, initialised from the teacher, learns on all
conditions to match the frozen, stage-1-aligned LiDAR features, in both directions, while a
retention term keeps it close to the frozen teacher on clear images."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from collab_distill.config import RunConfig
from collab_distill.data.conditions import CONDITION_TAGS
from collab_distill.data.voxelize import Voxels
from collab_distill.losses import cosine_distance, grouped_mean, patch_mean
from collab_distill.methods.base import Method, MethodOutput
from collab_distill.methods.common import build_image_encoder, load_module_weights, method_section, pair_samples
from collab_distill.methods.config import Stage2Config
from collab_distill.models import ImageEncoder, PointEncoder, ProjectionHead, sample_features

CLEAR = CONDITION_TAGS.index("clear")


class Stage2(Method):
    """Trainable: ``student`` and ``student_head`` (identity at start). Frozen: ``teacher``,
    ``point_encoder`` and ``point_head`` (loaded from ``method.point_weights``).

    Losses (weights ``method.anchor_weight``, ``pixel_to_point_weight``, ``retention_weight``), each
    averaged per sample then over samples:
      * anchor (point -> pixel): ``1 - cos(head(student at the pair's pixel), 3D feature of the point)``;
      * patch (pixel -> point): for each patch holding points, ``1 - cos(head(patch token), mean 3D
        feature of its points)``;
      * retention: on clear images, ``1 - cos`` between student and teacher patch tokens and CLS.
    The 3D side is frozen, so the targets are stop-gradient by construction.
    """

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__()
        m = method_section(cfg, Stage2Config)
        if not m.point_weights:
            raise ValueError("stage2 needs method.point_weights: the weights/ folder of a stage-1 run")
        self.w_anchor, self.w_patch, self.w_ret = m.anchor_weight, m.pixel_to_point_weight, m.retention_weight
        self.teacher = build_image_encoder(cfg)
        self.student = build_image_encoder(cfg)
        self.student.load_state_dict(self.teacher.state_dict())
        dim = self.teacher.embed_dim
        self.student_head = nn.Linear(dim, dim)
        with torch.no_grad():
            self.student_head.weight.copy_(torch.eye(dim))
            self.student_head.bias.zero_()
        self.point_encoder = PointEncoder(cfg.model.point)
        self.point_head = ProjectionHead(cfg.model.head, self.point_encoder.out_channels, dim)
        load_module_weights(self.point_encoder, m.point_weights, "point_encoder", "method.point_weights")
        load_module_weights(self.point_head, m.point_weights, "head", "method.point_weights")
        self.freeze_the_rest()

    def trainable_names(self) -> tuple[str, ...]:
        return ("student", "student_head")

    def layer_decay_vit(self) -> ImageEncoder:
        return self.student

    def _retention(self, batch: dict, student_map: Tensor, student_cls: Tensor) -> Tensor:
        clear = batch["conditions"][:, CLEAR]
        if not bool(clear.any()):
            return student_map.sum() * 0.0
        with torch.no_grad():
            teacher = self.teacher(batch["images"][clear])
        tokens = cosine_distance(student_map[clear].flatten(2).transpose(1, 2),
                                 teacher.patch[-1].flatten(2).transpose(1, 2)).mean(1)
        return (tokens + cosine_distance(student_cls[clear], teacher.cls)).mean()

    def forward(self, batch: dict) -> MethodOutput:
        num_samples = len(batch["offsets"])
        with torch.no_grad():
            feats3d = self.point_head(self.point_encoder(Voxels.from_batch(batch), batch["pair_point"]))
        student = self.student(batch["images"])
        smap = student.patch[-1]
        p = self.student.patch_size
        anchor_d = cosine_distance(self.student_head(sample_features(smap, batch["pair_uv"], batch["pair_image"], p)),
                                   feats3d)
        anchor = grouped_mean(anchor_d, pair_samples(batch), num_samples)
        _, dim, h, w = smap.shape
        col = (batch["pair_uv"][:, 0] + 0.5).div(p).floor().long().clamp(0, w - 1)
        row = (batch["pair_uv"][:, 1] + 0.5).div(p).floor().long().clamp(0, h - 1)
        mean3d, keys = patch_mean(feats3d, (batch["pair_image"] * h + row) * w + col)
        tokens = smap.permute(0, 2, 3, 1).reshape(-1, dim)[keys]
        patch_d = cosine_distance(self.student_head(tokens), mean3d)
        patch = grouped_mean(patch_d, batch["image_sample"][keys // (h * w)], num_samples)
        retention = self._retention(batch, smap, student.cls)
        loss = self.w_anchor * anchor + self.w_patch * patch + self.w_ret * retention
        return MethodOutput(loss, {"anchor": anchor.detach(), "patch": patch.detach(), "retention": retention.detach()})
