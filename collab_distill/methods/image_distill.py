"""Image-only distillation baselines: one module, three views of the data.

=============  ======================================  ==========================================
method         teacher sees                            student sees
=============  ======================================  ==========================================
asymmetric     the clean image                         a degraded copy (random name/severity)
self_distill   a degraded copy                         another, independently degraded copy
teacher_plus   a photometrically jittered copy         another jittered copy (no weather at all)
=============  ======================================  ==========================================

The views are made for the whole batch at once on the training device, seeded per image
(:mod:`collab_distill.methods.views`); no LiDAR is loaded for these methods. The student starts as a copy
of the teacher. Losses: CLS cosine, patch-token cosine and the KL of
the CLS->patch attention of the last ``attn_blocks`` blocks. With ``ema_momentum > 0`` the teacher is
an exponential moving average of the student (updated after each optimiser step) instead of frozen.
"""
from __future__ import annotations

import torch

from collab_distill.config import RunConfig
from collab_distill.losses import attention_kl, cosine_distance
from collab_distill.methods.base import Method, MethodOutput
from collab_distill.methods.common import build_image_encoder, method_section
from collab_distill.methods.config import ImageDistillConfig
from collab_distill.methods.views import degraded_view, jittered_view
from collab_distill.models import ImageEncoder

JITTER = 0.2  # teacher_plus: +-20 % brightness, contrast, saturation


class ImageDistill(Method):
    """Trainable: ``student``. Frozen (or EMA): ``teacher``. Reads images only (no LiDAR is loaded)."""

    needs_points = False

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__()
        m = method_section(cfg, ImageDistillConfig)
        self.mode = m.name
        self.names, self.severities = list(m.degradations), list(m.severities)
        self.w_cls, self.w_patch, self.w_attn = m.cls_weight, m.patch_weight, m.attn_weight
        self.ema = m.ema_momentum
        self.seed = cfg.experiment.seed
        self.teacher = build_image_encoder(cfg)
        self.student = build_image_encoder(cfg)
        self.student.load_state_dict(self.teacher.state_dict())
        depth = self.student.depth
        self.attn_blocks = list(range(depth - m.attn_blocks, depth)) if self.w_attn > 0 else []
        self.freeze_the_rest()

    def trainable_names(self) -> tuple[str, ...]:
        return ("student",)

    def state_names(self) -> tuple[str, ...]:
        return ("student", "teacher") if self.ema > 0 else ("student",)

    def layer_decay_vit(self) -> ImageEncoder:
        return self.student

    def views(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """``(teacher input, student input)``, each ``(I, 3, H, W)``."""
        if self.mode == "asymmetric":
            return batch["images"], degraded_view(batch, self.names, self.severities, self.seed, "student")
        if self.mode == "self_distill":
            return (degraded_view(batch, self.names, self.severities, self.seed, "teacher"),
                    degraded_view(batch, self.names, self.severities, self.seed, "student"))
        return jittered_view(batch, JITTER, self.seed, "teacher"), jittered_view(batch, JITTER, self.seed, "student")

    def forward(self, batch: dict) -> MethodOutput:
        teacher_in, student_in = self.views(batch)
        with torch.no_grad():
            t = self.teacher(teacher_in, attn_blocks=self.attn_blocks)
        s = self.student(student_in, attn_blocks=self.attn_blocks)
        cls = cosine_distance(s.cls, t.cls).mean()
        patch = cosine_distance(s.patch[-1].flatten(2).transpose(1, 2), t.patch[-1].flatten(2).transpose(1, 2)).mean()
        attn = sum((attention_kl(ta, sa, self.student.num_prefix_tokens).mean() for ta, sa in zip(t.attn, s.attn)),
                   start=cls * 0.0) / max(1, len(self.attn_blocks))
        loss = self.w_cls * cls + self.w_patch * patch + self.w_attn * attn
        return MethodOutput(loss, {"cls": cls.detach(), "patch": patch.detach(), "attn": attn.detach()})

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        if self.ema > 0:
            for t, s in zip(self.teacher.parameters(), self.student.parameters()):
                t.mul_(self.ema).add_(s.detach(), alpha=1 - self.ema)
