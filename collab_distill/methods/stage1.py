"""Stage 1 (pre-alignment): the LiDAR encoder learns the frozen clear-weather teacher's features at
the projected pixels of its points (``method.stage1_loss``: ``1 - cos`` per sample, or ScaLR's
normalised L2 distance over all pairs)."""
from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor

from collab_distill.config import RunConfig
from collab_distill.data.feature_store import FeatureStore
from collab_distill.data.shards import sha256_file
from collab_distill.data.voxelize import Voxels
from collab_distill.losses import cosine_distance, grouped_mean, normalized_l2
from collab_distill.methods.base import Method, MethodOutput
from collab_distill.methods.common import build_image_encoder, method_section, pair_samples
from collab_distill.methods.config import Stage1Config
from collab_distill.models import ImageEncoder, PointEncoder, ProjectionHead, sample_features
from collab_distill.models.config import WEIGHTS_HUB, WEIGHTS_RANDOM


def state_dict_sha256(module: torch.nn.Module) -> str:
    """Hex sha256 of a module's state dict: every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def teacher_identity(teacher: ImageEncoder) -> dict[str, Any]:
    """What the teacher's patch maps depend on, as a teacher-feature store records it: architecture,
    input size ``(H, W)``, the sha256 of the weights file (of the state dict for ``random`` or ``hub``
    weights), the block (last of ``model.image.blocks``, from 0), final norm, extra timm arguments,
    embed dim ``D`` and patch grid ``(h, w)``."""
    cfg = teacher.cfg
    in_code = cfg.weights in (WEIGHTS_HUB, WEIGHTS_RANDOM)
    return {"architecture": cfg.name, "image_size": list(teacher.vit.patch_embed.img_size),
            "weights_sha256": state_dict_sha256(teacher.vit) if in_code else sha256_file(str(cfg.weights)),
            "block": cfg.blocks[-1] % teacher.depth, "norm": cfg.norm, "model_kwargs": dict(cfg.model_kwargs),
            "embed_dim": teacher.embed_dim, "grid": list(teacher.grid_size)}


class Stage1(Method):
    """Trainable: ``point_encoder`` and ``head``. Frozen: ``teacher`` (absent with a store).

    With ``method.teacher_store`` the teacher's patch maps come with the batch (``teacher_maps``, read
    from the store by the dataset): the store's identity is checked against this run's teacher, which
    is then dropped (no forward pass, no device memory).
    """

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__()
        m = method_section(cfg, Stage1Config)
        teacher = build_image_encoder(cfg)  # also with a store: its identity, and the same seeded init either way
        self.patch_size = teacher.patch_size
        self.teacher: ImageEncoder | None = teacher
        if m.teacher_store:
            FeatureStore(m.teacher_store).check_teacher(teacher_identity(teacher))
            self.teacher = None
        self.point_encoder = PointEncoder(cfg.model.point)
        self.head = ProjectionHead(cfg.model.head, self.point_encoder.out_channels, teacher.embed_dim)
        self.loss_kind = m.stage1_loss
        self.freeze_the_rest()

    @classmethod
    def dataset_options(cls, cfg: RunConfig) -> dict[str, Any]:
        """Also the teacher-feature store the dataset reads the maps from (``method.teacher_store``)."""
        return {**super().dataset_options(cfg), "teacher_store": method_section(cfg, Stage1Config).teacher_store}

    def trainable_names(self) -> tuple[str, ...]:
        return ("point_encoder", "head")

    @torch.no_grad()
    def teacher_maps(self, batch: dict) -> Tensor:
        """``(I, D, h, w)`` float32 teacher patch maps of the batch's images: the stored ones
        (``batch["teacher_maps"]``, float16) with a store, else the teacher's on ``batch["images"]``."""
        if self.teacher is None:
            return batch["teacher_maps"].to(batch["pair_uv"].device, torch.float32, non_blocking=True)
        return self.teacher(batch["images"]).patch[-1]

    def forward(self, batch: dict) -> MethodOutput:
        target = sample_features(self.teacher_maps(batch), batch["pair_uv"], batch["pair_image"], self.patch_size)
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
