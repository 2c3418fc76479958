"""Stage 1 (pre-alignment): the LiDAR encoder learns the frozen clear-weather teacher's features at
the projected pixels of its points (``method.stage1_loss``: ``1 - cos`` per sample, or ScaLR's
normalised L2 distance over all pairs)."""
from __future__ import annotations

import torch
from torch import Tensor

from collab_distill.config import RunConfig
from collab_distill.data.voxelize import Voxels
from collab_distill.losses import cosine_distance, grouped_mean, normalized_l2
from collab_distill.methods.base import Method, MethodOutput
from collab_distill.methods.common import build_image_encoder, method_section, pair_samples
from collab_distill.methods.config import Stage1Config
from collab_distill.models import PointEncoder, ProjectionHead, sample_features


class Stage1(Method):
    """Trainable: ``point_encoder`` and ``head``. Frozen: ``teacher``.

    With ``teacher_cache`` the teacher's patch map of each (sample, camera) is computed once and kept
    in fp16: the teacher is frozen and, without image augmentation, sees the same pixels every epoch.
    """

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__()
        m = method_section(cfg, Stage1Config)
        if m.teacher_cache and cfg.data.augment:
            raise ValueError("method.teacher_cache=true needs data.augment=false (augmented crops change the "
                             "teacher's input every epoch)")
        self.teacher = build_image_encoder(cfg)
        self.point_encoder = PointEncoder(cfg.model.point)
        self.head = ProjectionHead(cfg.model.head, self.point_encoder.out_channels, self.teacher.embed_dim)
        self.use_cache = m.teacher_cache
        self.loss_kind = m.stage1_loss
        self.cache: dict[tuple[str, str], Tensor] = {}
        self.freeze_the_rest()

    def trainable_names(self) -> tuple[str, ...]:
        return ("point_encoder", "head")

    @torch.no_grad()
    def teacher_maps(self, batch: dict) -> Tensor:
        """``(I, D, h, w)`` teacher patch maps of the batch's images (from the cache when enabled)."""
        if not self.use_cache:
            return self.teacher(batch["images"]).patch[-1]
        keys = [(batch["tokens"][s], cam) for s, cam in zip(batch["image_sample"].tolist(), batch["cameras"])]
        missing = [i for i, k in enumerate(keys) if k not in self.cache]
        if missing:
            maps = self.teacher(batch["images"][missing]).patch[-1]
            for i, fmap in zip(missing, maps):
                self.cache[keys[i]] = fmap.to(torch.float16).cpu()
        return torch.stack([self.cache[k] for k in keys]).to(batch["images"].device, torch.float32)

    def forward(self, batch: dict) -> MethodOutput:
        target = sample_features(self.teacher_maps(batch), batch["pair_uv"], batch["pair_image"],
                                 self.teacher.patch_size)
        point_feats = self.head(self.point_encoder(Voxels.from_batch(batch), batch["pair_point"]))
        if self.loss_kind == "scalr_l2":
            dist = normalized_l2(point_feats, target)
            loss = dist.mean() if len(dist) else dist.sum()  # ScaLR: every pair of the batch weighs the same
            cos = 1.0 - dist.detach().square() / 2
        else:
            dist = cosine_distance(point_feats, target)
            loss = grouped_mean(dist, pair_samples(batch), len(batch["offsets"]))
            cos = 1.0 - dist.detach()
        return MethodOutput(loss, {"cos": cos.mean(), "pairs": torch.tensor(float(len(dist)))})
