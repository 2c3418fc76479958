"""A label-free teacher: DINO + iBOT self-distillation and masked-pixel prediction of a ViT on clear images,
no labels and no LiDAR.

Each image of the batch gives two global crops (:mod:`collab_distill.methods.ssl_views`: random resized
crop and flip, photometric jitter), at the training size, made batched on the device and seeded per image.
The student (``student`` ViT + ``student_head``) sees both crops, half of them with random patches masked; the
teacher (``teacher`` ViT + ``teacher_head``, an exponential moving average of the student, no gradients) sees
them unmasked. The head maps a token to ``out_dim`` prototype logits; the teacher's are centred (a running
batch mean) and sharpened (``teacher_temp``), the student's softened (``student_temp``). Losses, each a
cross-entropy ``-sum(p_teacher * log p_student)``:

* DINO (``dino_weight``): the student's CLS of one crop against the teacher's CLS of the other crop;
* iBOT (``ibot_weight``): at every masked patch, the student's token against the teacher's token of the
  same patch in the unmasked crop: the dense term, which makes the patch tokens (what the probes and stage 1
  read) carry the image's content, not only the CLS;
* masked pixels (``pixel_weight``, SimMIM/MAE): at every masked patch, a linear ``pixel_head`` predicts the
  patch's pixels (normalised per patch) from the student's token: a target that does not depend on the
  teacher, so the dense features learn from the first step, while the self-distillation terms are still near
  uniform (a few hundred CPU steps are the start of a DINO run).

The exported teacher ViT (``teacher_vit.safetensors``, as ``teacher_pretrain`` writes it) is the EMA teacher,
which DINO and iBOT evaluate; ``student.safetensors`` (and its timm/DINOv2 exports) is the student, under the
name the image-only baselines give theirs. ``teacher_head.safetensors`` and ``pixel_head.safetensors`` complete
the teacher's objective: with ``method.init_from`` (that ``weights/`` folder) and ``model.image.weights`` (its
``teacher_vit.safetensors``) a new run continues it, e.g. on other conditions (the data-matched control).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from collab_distill.config import ConfigError, RunConfig
from collab_distill.methods.base import Method, MethodOutput
from collab_distill.methods.common import build_image_encoder, method_section
from collab_distill.methods.config import TeacherSSLConfig
from collab_distill.methods.ssl_views import apply_masks, patch_masks, random_resized_crops
from collab_distill.methods.views import jittered_view
from collab_distill.models import ImageEncoder, save_vit_weights
from collab_distill.models.weights import WeightsError, check_finite_weights, read_state_dict, write_safetensors

CROPS = ("global0", "global1")  # the two global crops of every image; the names seed their draws


class ProjectionHead(nn.Module):
    """DINO's head: an MLP (``dim -> hidden -> hidden -> bottleneck``, GELU), L2 normalisation, then the
    cosine to ``out_dim`` prototypes (a weight-normalised last layer with its norm fixed at 1)."""

    def __init__(self, dim: int, hidden: int, bottleneck: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.prototypes = nn.Parameter(torch.randn(out_dim, bottleneck) / bottleneck ** 0.5)

    def forward(self, tokens: Tensor) -> Tensor:
        """``(..., dim)`` tokens -> ``(..., out_dim)`` logits in ``[-1, 1]``."""
        return F.normalize(self.mlp(tokens), dim=-1) @ F.normalize(self.prototypes, dim=-1).T


class Centers(nn.Module):
    """The teacher's running logit means (DINO's centring), one ``(out_dim,)`` buffer per token kind."""

    def __init__(self, out_dim: int) -> None:
        super().__init__()
        self.register_buffer("cls", torch.zeros(out_dim))
        self.register_buffer("patch", torch.zeros(out_dim))

    @torch.no_grad()
    def update(self, kind: str, logits: Tensor, momentum: float) -> None:
        """Move buffer ``kind`` towards the mean of ``logits (N, out_dim)`` over every process's ``N`` rows."""
        total = torch.cat([logits.sum(0), logits.new_tensor([len(logits)])])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
        mean = total[:-1] / total[-1].clamp(min=1)
        getattr(self, kind).mul_(momentum).add_(mean, alpha=1 - momentum)


def soft_cross_entropy(student: Tensor, teacher: Tensor) -> Tensor:
    """``(...)``: ``-sum(softmax(teacher) * log_softmax(student))`` over the last dim of two ``(..., K)``
    tempered logits; no gradient flows to ``teacher``."""
    return -(F.softmax(teacher.detach(), dim=-1) * F.log_softmax(student, dim=-1)).sum(-1)


def masked_mean(values: Tensor, masks: Tensor) -> Tensor:
    """Mean of ``values (N, T)`` over the masked tokens (``masks (N, T)`` bool) of each row, then over the rows
    that have any; 0 (with a graph) when no row has a mask."""
    rows = masks.any(1)
    if not bool(rows.any()):
        return values.sum() * 0.0
    return ((values * masks).sum(1)[rows] / masks.sum(1)[rows]).mean()


class TeacherSSL(Method):
    """Trainable: ``student`` (the ViT), ``student_head`` and ``pixel_head``. EMA, no gradients: ``teacher``,
    ``teacher_head``; ``centers`` (buffers). Reads images only (no LiDAR, no labels)."""

    needs_points = False

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__()
        m = method_section(cfg, TeacherSSLConfig)
        for key in ("crop_scale", "mask_ratio"):
            low, high = getattr(m, key)
            if not 0 < low <= high:
                raise ConfigError(f"method.{key}={[low, high]}: give [low, high] with 0 < low <= high")
        self.m, self.seed = m, cfg.experiment.seed
        self.student = build_image_encoder(cfg)
        self.student_head = ProjectionHead(self.student.embed_dim, m.hidden_dim, m.bottleneck_dim, m.out_dim)
        self.teacher = build_image_encoder(cfg)
        self.teacher_head = ProjectionHead(self.student.embed_dim, m.hidden_dim, m.bottleneck_dim, m.out_dim)
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher_head.load_state_dict(self.student_head.state_dict())
        self.pixel_head = nn.Linear(self.student.embed_dim, 3 * self.student.patch_size ** 2)
        self.centers = Centers(m.out_dim)
        if m.init_from:
            heads = _read_heads(Path(m.init_from))
            for module, name in ((self.student_head, "teacher_head"), (self.teacher_head, "teacher_head"),
                                 (self.pixel_head, "pixel_head")):
                try:
                    module.load_state_dict(heads[name])
                except RuntimeError as error:
                    raise WeightsError(f"{Path(m.init_from) / name}.safetensors does not fit this run's heads "
                                       f"(method.out_dim, hidden_dim, bottleneck_dim and the ViT must be the run's): "
                                       f"{str(error).splitlines()[-1].strip()}") from None
        self.freeze_the_rest()

    def trainable_names(self) -> tuple[str, ...]:
        return ("student", "student_head", "pixel_head")

    def state_names(self) -> tuple[str, ...]:
        return (*self.trainable_names(), "teacher", "teacher_head", "centers")

    def layer_decay_vit(self) -> ImageEncoder:
        return self.student

    def views(self, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        """``(crops, masked crops, masks)``: the two global crops of every image stacked crop-major,
        ``(2I, 3, H, W)`` each, and the student's patch masks ``(2I, h, w)`` bool."""
        crops, masks = [], []
        for name in CROPS:
            crop = random_resized_crops(batch, batch["images"], self.m.crop_scale, self.seed, name)
            crops.append(jittered_view({**batch, "images": crop}, self.m.jitter, self.seed, name))
            masks.append(patch_masks(batch, self.student.grid_size, self.m.mask_prob, self.m.mask_ratio, self.seed,
                                     f"{name}_mask"))
        crops_t, masks_t = torch.cat(crops), torch.cat(masks)
        return crops_t, apply_masks(crops_t, masks_t, self.student.patch_size, self.student.mean), masks_t

    def _tokens(self, encoder: ImageEncoder, head: ProjectionHead, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Head logits of the CLS ``(2I, K)`` and of the patch tokens ``(2I, h*w, K)``, and the patch tokens
        ``(2I, h*w, D)``."""
        out = encoder(images)
        tokens = out.patch[-1].flatten(2).transpose(1, 2)
        return head(out.cls), head(tokens), tokens

    def _pixels(self, tokens: Tensor, crops: Tensor) -> Tensor:
        """``(2I, h*w)`` squared error of the pixels predicted from the student's ``tokens (2I, h*w, D)`` against
        each patch of the unmasked ``crops (2I, 3, H, W)``, normalised per patch (MAE's ``norm_pix_loss``)."""
        p = self.student.patch_size
        target = F.unfold(crops, kernel_size=p, stride=p).transpose(1, 2)       # (2I, h*w, 3*p*p)
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        return (self.pixel_head(tokens) - target).pow(2).mean(-1)

    def forward(self, batch: dict) -> MethodOutput:
        m = self.m
        crops, masked, masks = self.views(batch)
        with torch.no_grad():
            t_cls, t_patch, _ = self._tokens(self.teacher, self.teacher_head, crops)
        s_cls, s_patch, s_tokens = self._tokens(self.student, self.student_head, masked)
        t_cls_p = (t_cls - self.centers.cls) / m.teacher_temp
        t_patch_p = (t_patch - self.centers.patch) / m.teacher_temp
        # DINO: crop 0 of image i against crop 1 of image i and back (the crops are stacked crop-major)
        cls = soft_cross_entropy(s_cls / m.student_temp, t_cls_p.roll(len(crops) // 2, dims=0)).mean()
        flat = masks.flatten(1).to(crops.device)
        patch = masked_mean(soft_cross_entropy(s_patch / m.student_temp, t_patch_p), flat)
        pixel = masked_mean(self._pixels(s_tokens, crops), flat)
        if self.training:
            self.centers.update("cls", t_cls, m.center_momentum)
            self.centers.update("patch", t_patch.flatten(0, 1), m.center_momentum)
        entropy = -(F.softmax(t_cls_p, -1) * F.log_softmax(t_cls_p, -1)).sum(-1).mean()
        return MethodOutput(m.dino_weight * cls + m.ibot_weight * patch + m.pixel_weight * pixel,
                            {"dino": cls.detach(), "ibot": patch.detach(), "pixel": pixel.detach(),
                             "teacher_entropy": entropy.detach()})

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """The teacher moves towards the student: ``t = ema_momentum * t + (1 - ema_momentum) * s``."""
        for teacher, student in ((self.teacher, self.student), (self.teacher_head, self.student_head)):
            for t, s in zip(teacher.parameters(), student.parameters()):
                t.mul_(self.m.ema_momentum).add_(s.detach(), alpha=1 - self.m.ema_momentum)

    def export(self, weights_dir: Path) -> list[Path]:
        """Also write the EMA teacher's ViT alone (``teacher_vit.safetensors``, as ``teacher_pretrain``), usable as
        ``model.image.weights`` by every other run, and its head (``teacher_head.safetensors``, read by
        ``method.init_from``)."""
        head = {k: v.detach().cpu().contiguous() for k, v in self.teacher_head.state_dict().items()}
        check_finite_weights({**{f"teacher_head.{k}": v for k, v in head.items()},
                              **{f"teacher.{k}": v for k, v in self.teacher.state_dict().items()}},
                             f"export to {weights_dir}")
        paths = super().export(weights_dir)  # checks the trainable tensors the same way before writing any
        write_safetensors(head, weights_dir / "teacher_head.safetensors")
        return [*paths, weights_dir / "teacher_head.safetensors",
                save_vit_weights(self.teacher.vit, weights_dir / "teacher_vit.safetensors")]


def _read_heads(folder: Path) -> dict[str, dict[str, Tensor]]:
    """``teacher_head`` and ``pixel_head`` state dicts from ``folder`` (a teacher_ssl run's ``weights/``).

    Raises:
        WeightsError: a file is missing, damaged or holds non-finite values.
    """
    heads = {}
    for name in ("teacher_head", "pixel_head"):
        path = folder / f"{name}.safetensors"
        if not path.is_file():
            raise WeightsError(f"{path} not found: point method.init_from at the weights/ folder of a teacher_ssl "
                               "run (it holds teacher_head.safetensors and pixel_head.safetensors)")
        heads[name] = read_state_dict(path)[0]
    return heads
