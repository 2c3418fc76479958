"""AdamW with parameter groups (no decay on norms, biases, embeddings; optional layer-wise lr decay)
and a per-iteration linear warm-up + cosine schedule."""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Iterable

import torch
from torch import nn

from collab_distill.config import OptimConfig

if TYPE_CHECKING:
    from collab_distill.models import ImageEncoder

_NO_DECAY = re.compile(r"(^|\.)(bias|pos_embed|cls_token|reg_token|mask_token|register_tokens)$|norm|bn\d*\.|\.bn\.")


def no_weight_decay(name: str, param: nn.Parameter) -> bool:
    """True for biases, norm weights, 1-D parameters and token/position embeddings."""
    return param.ndim <= 1 or bool(_NO_DECAY.search(name))


def vit_layer_id(name: str, num_layers: int) -> int:
    """Depth of a ViT parameter for layer-wise lr decay: embeddings 0, block i -> i + 1, rest last."""
    if re.search(r"(^|\.)(cls_token|reg_token|register_tokens|mask_token|pos_embed|patch_embed)", name):
        return 0
    match = re.search(r"(^|\.)blocks\.(\d+)\.", name)
    return int(match.group(2)) + 1 if match else num_layers + 1


def layer_scales(vit: ImageEncoder | None, layer_decay: float) -> dict[int, float]:
    """``id(parameter)`` -> lr scale ``layer_decay ** (depth + 1 - layer id)`` for every parameter of
    ``vit`` (empty without a ViT or with ``layer_decay`` 1)."""
    if vit is None or layer_decay >= 1.0:
        return {}
    return {id(param): layer_decay ** (vit.depth + 1 - vit_layer_id(name, vit.depth))
            for name, param in vit.named_parameters()}


def parameter_groups(named: Iterable[tuple[str, nn.Parameter]], cfg: OptimConfig, vit: ImageEncoder | None = None
                     ) -> list[dict]:
    """Groups for AdamW: decay / no decay, times the layer-wise lr scale of :func:`layer_scales` for the
    parameters of ``vit`` (recognised by identity, whatever their name in ``named``)."""
    scales = layer_scales(vit, cfg.layer_decay)
    groups: dict[tuple[bool, float], dict] = {}
    for name, param in named:
        if not param.requires_grad:
            continue
        scale = scales.get(id(param), 1.0)
        decay = not no_weight_decay(name, param)
        group = groups.setdefault((decay, scale), {"params": [], "names": [], "lr_scale": scale,
                                                   "weight_decay": cfg.weight_decay if decay else 0.0})
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg: OptimConfig, vit: ImageEncoder | None = None) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of ``model`` in :func:`parameter_groups` (``vit``: the ViT
    that gets layer-wise lr decay, a module inside ``model``)."""
    groups = parameter_groups(model.named_parameters(), cfg, vit)
    if not groups:
        raise ValueError("the model has no trainable parameter")
    for group in groups:
        group["lr"] = cfg.lr * group["lr_scale"]
        group.pop("names")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


class WarmupCosine:
    """lr factor at optimiser step ``s``: linear warm-up over ``warmup`` steps, then cosine to ``min_ratio``."""

    def __init__(self, warmup: int, total: int, min_ratio: float = 0.0) -> None:
        self.warmup, self.total, self.min_ratio = warmup, max(total, 1), min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration LambdaLR (stepped once per optimiser step)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(cfg.warmup_steps, total_steps, cfg.min_lr_ratio))
