"""Exports of a trained ViT that other code bases load without this package.

* :func:`export_timm`: a timm hub-style folder, ``model.safetensors`` (timm's own keys) and
  ``config.json`` (timm's layout, written by timm's own writer, plus a ``collab_distill`` block with the
  recipe and the file's sha256). It loads with ``timm.create_model("local-dir:<folder>", pretrained=True)``
  or, with the architecture's name, ``timm.create_model(arch, pretrained=True,
  pretrained_cfg_overlay=dict(file=".../model.safetensors"), **config["model_args"])``.
* :func:`export_dinov2`: the original DINOv2 key layout (facebookresearch/dinov2), the inverse of timm's
  ``_convert_dinov2``, for a ViT that :func:`dinov2_mismatch` accepts as a DINOv2 architecture.
* :func:`export_vit`: both, as :meth:`Method.export <collab_distill.methods.base.Method.export>` writes
  them next to the project's own files.

Every file is written under a temporary name and renamed; a folder is built beside its final place and
renamed into it; a ViT holding a NaN or an infinity is refused before anything is written.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from timm.layers import GluMlp, LayerScale, Mlp, resample_abs_pos_embed
from timm.models._hub import save_config_for_hf  # the writer of timm's config.json (save_for_hf, push_to_hf_hub)
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from collab_distill.errors import UserError

from .weights import check_finite_weights, write_safetensors

log = logging.getLogger(__name__)

#: File names inside a timm folder (those timm's ``local-dir:`` loader looks for).
TIMM_WEIGHTS = "model.safetensors"
TIMM_CONFIG = "config.json"
#: Top-level ``config.json`` key of what this project adds (timm ignores it).
EXTRAS_KEY = "collab_distill"

_DINOV2_BLOCK_KEYS = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                      "attn.proj.bias", "ls1.gamma", "norm2.weight", "norm2.bias", "ls2.gamma")
_SWIGLU_RENAMES = ((re.compile(r"^(blocks\.\d+\.mlp\.)fc1\."), r"\1w12."),
                   (re.compile(r"^(blocks\.\d+\.mlp\.)fc2\."), r"\1w3."))


class ExportError(UserError, RuntimeError):
    """A ViT cannot be written in the asked layout (e.g. it is no DINOv2 architecture)."""


# ------------------------------------------------------------------------------------ both layouts
def export_vit(vit: VisionTransformer, weights_dir: Path, name: str, recipe: Mapping[str, Any]) -> list[Path]:
    """Write ``<weights_dir>/<name>_timm/`` (:func:`export_timm`) and, when :func:`dinov2_mismatch`
    accepts ``vit``, ``<weights_dir>/<name>_dinov2.safetensors`` (:func:`export_dinov2`); returns the paths.

    Raises:
        NonFiniteWeightsError: a parameter or buffer holds a NaN or an infinity (nothing is written).
        ExportError: timm cannot describe the model in ``config.json`` (see :func:`export_timm`).
    """
    paths = [export_timm(vit, weights_dir / f"{name}_timm", recipe)]
    reason = dinov2_mismatch(vit)
    if reason is None:
        paths.append(export_dinov2(vit, weights_dir / f"{name}_dinov2.safetensors"))
    else:
        log.info("%s: no DINOv2-layout export (%s)", name, reason)
    return paths


# ------------------------------------------------------------------------------------ timm
def export_timm(vit: VisionTransformer, folder: Path, recipe: Mapping[str, Any]) -> Path:
    """Write ``vit`` as a timm hub-style folder: ``model.safetensors`` + ``config.json``; returns ``folder``.

    ``config.json`` is timm's own (``architecture``, ``num_classes``, ``model_args`` with the trained
    ``img_size``, ``pretrained_cfg`` with ``input_size``, ``mean``, ``std``, ...) plus
    ``collab_distill: {recipe, sha256: {model.safetensors: <hex>}}``; ``recipe`` must be JSON-serialisable.
    An existing ``folder`` is replaced only once the new one is complete.

    Raises:
        NonFiniteWeightsError: a parameter or buffer holds a NaN or an infinity (nothing is written).
        ExportError: timm cannot serialise one of the model's construction arguments.
    """
    state = _cpu_state(vit)
    check_finite_weights(state, f"export to {folder}")
    with _new_folder(folder) as tmp:
        digest = write_safetensors(state, tmp / TIMM_WEIGHTS, {"format": "pt"})
        extras = {"recipe": dict(recipe), "sha256": {TIMM_WEIGHTS: digest}}
        try:
            save_config_for_hf(vit, tmp / TIMM_CONFIG, model_config={EXTRAS_KEY: extras})
        except ValueError as exc:  # a construction argument that JSON cannot hold
            raise ExportError(f"{folder}: timm cannot write config.json for {vit.pretrained_cfg.get('architecture')} "
                              f"({exc})") from exc
    return folder


# ------------------------------------------------------------------------------------ DINOv2
def dinov2_mismatch(vit: VisionTransformer) -> str | None:
    """Why ``vit`` has no exact original-DINOv2 form, or ``None`` when it has one.

    The rule, from the model's structure (so every timm ``*_dinov2`` model, their ``_reg4_`` variants and
    the CPU presets pass, whatever their name): a class token; registers exactly when the positional
    embedding skips the prefix tokens (``no_embed_class``, how timm holds DINOv2's registers); every block
    pre-norm with LayerScale, an attention with a qkv bias, and a GELU MLP or a SwiGLU (timm's
    ``SwiGLUPacked``); no extra norm or head (the state dict holds DINOv2's keys and no other); a square
    reference grid (``pretrained_cfg["input_size"]`` over the patch size, 37x37 for 518 px at patch 14).
    """
    mlp = vit.blocks[0].mlp
    act = getattr(mlp, "act", None)
    swiglu = isinstance(mlp, GluMlp) and type(act) is nn.SiLU and not mlp.gate_last
    gelu = type(mlp) is Mlp and type(act) is nn.GELU and act.approximate == "none"
    same_mlp = all(type(b.mlp) is type(mlp) and type(getattr(b.mlp, "act", None)) is type(act) for b in vit.blocks)
    grid = _reference_grid(vit)
    keys, expected = set(vit.state_dict()), _timm_keys_of_dinov2(vit)
    checks = (
        (vit.cls_token is not None, "no class token"),
        ((vit.num_reg_tokens > 0) == vit.no_embed_class,
         "registers without no_embed_class, or no_embed_class without registers"),
        (all(isinstance(b.ls1, LayerScale) and isinstance(b.ls2, LayerScale) for b in vit.blocks), "no LayerScale"),
        (same_mlp and (swiglu or gelu), f"the MLP is a {type(mlp).__name__} with {type(act).__name__}, "
                                        "not GELU or SwiGLU"),
        (grid[0] == grid[1], f"reference grid {grid} is not square"),
        (keys == expected, f"keys outside DINOv2's layout {sorted(keys - expected)[:3]} or missing "
                           f"{sorted(expected - keys)[:3]}"),
    )
    return next((reason for ok, reason in checks if not ok), None)


def dinov2_state_dict(vit: VisionTransformer) -> dict[str, Tensor]:
    """``vit``'s weights in the original DINOv2 layout (CPU tensors); the inverse of timm's ``_convert_dinov2``.

    ``cls_token (1, 1, D)``, ``pos_embed (1, 1 + g*g, D)`` on the reference grid ``g x g`` (resampled
    bicubically from the trained grid when they differ; a copy when they agree), ``mask_token (1, D)``
    (zeros: DINOv2 has one, training here never uses it), ``register_tokens (1, R, D)`` when there are
    registers, ``patch_embed.proj.*``, ``blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1,
    mlp.fc2, ls2.gamma}`` (SwiGLU: ``mlp.w12``/``mlp.w3``), ``norm.*``. With registers timm has folded
    DINOv2's class-token position into ``cls_token``; here that position is zero and ``cls_token`` keeps the
    sum, which computes the same tokens.

    Raises:
        ExportError: :func:`dinov2_mismatch` gives a reason.
    """
    reason = dinov2_mismatch(vit)
    if reason is not None:
        raise ExportError(f"{vit.pretrained_cfg.get('architecture')} is no DINOv2 architecture ({reason}); "
                          "only the timm export exists for it")
    renames = _SWIGLU_RENAMES if isinstance(vit.blocks[0].mlp, GluMlp) else ()
    out = {}
    for key, value in _cpu_state(vit).items():
        for pattern, replacement in renames:
            key = pattern.sub(replacement, key)
        out[key] = value
    pos = out["pos_embed"]
    if vit.num_reg_tokens:
        out["register_tokens"] = out.pop("reg_token")
        pos = torch.cat([pos.new_zeros(1, 1, pos.shape[-1]), pos], dim=1)
    out["pos_embed"] = resample_abs_pos_embed(pos, new_size=list(_reference_grid(vit)),
                                              old_size=list(vit.patch_embed.grid_size), num_prefix_tokens=1)
    out["mask_token"] = pos.new_zeros(1, pos.shape[-1])
    return out


def export_dinov2(vit: VisionTransformer, path: Path) -> Path:
    """Write :func:`dinov2_state_dict` of ``vit`` to ``path`` (safetensors); returns ``path``.

    Metadata: ``layout: dinov2``, ``architecture`` (timm's name) and ``trained_img_size`` ("H,W").

    Raises:
        ExportError: ``vit`` is no DINOv2 architecture (:func:`dinov2_mismatch`).
        NonFiniteWeightsError: a parameter or buffer holds a NaN or an infinity (nothing is written).
    """
    state = dinov2_state_dict(vit)
    check_finite_weights(state, f"export to {path}")
    height, width = vit.patch_embed.img_size
    write_safetensors(state, path,
                      {"format": "pt", "layout": "dinov2", "architecture": str(vit.pretrained_cfg.get("architecture")),
                       "trained_img_size": f"{height},{width}"})
    return path


def _reference_grid(vit: VisionTransformer) -> tuple[int, int]:
    """``(h, w)`` patch grid of the architecture's reference input size (DINOv2: 518 px -> 37x37)."""
    height, width = vit.pretrained_cfg["input_size"][-2:]
    patch_h, patch_w = vit.patch_embed.patch_size
    return height // patch_h, width // patch_w


def _timm_keys_of_dinov2(vit: VisionTransformer) -> set[str]:
    """The timm state-dict keys of a DINOv2 ViT of ``vit``'s depth, registers included when it has them."""
    keys = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"}
    keys |= {"reg_token"} if vit.num_reg_tokens else set()
    block_keys = (*_DINOV2_BLOCK_KEYS, "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")
    return keys | {f"blocks.{i}.{key}" for i in range(len(vit.blocks)) for key in block_keys}


# ------------------------------------------------------------------------------------ files
@contextlib.contextmanager
def _new_folder(folder: Path) -> Iterator[Path]:
    """A fresh sibling of ``folder`` to fill; on success it replaces ``folder``, on an error it is deleted."""
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if folder.exists():
        aside = folder.with_name(f".{folder.name}.replaced-{os.getpid()}")
        os.replace(folder, aside)
        os.replace(tmp, folder)
        shutil.rmtree(aside)
    else:
        os.replace(tmp, folder)


def _cpu_state(vit: nn.Module) -> dict[str, Tensor]:
    """``vit``'s state dict, detached, on the CPU, contiguous."""
    return {k: v.detach().cpu().contiguous() for k, v in vit.state_dict().items()}
