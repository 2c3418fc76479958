"""ViT weight files: read (safetensors or ``weights_only`` torch files), convert, load strictly, save.

Accepted layouts: timm's ``VisionTransformer`` state dict, and the original DINOv2 one (``mask_token``,
``register_tokens``, positional embedding at 37x37+1), converted with timm's
``checkpoint_filter_fn``, which also resamples the positional embedding to the model's grid.
Files written by :func:`save_vit_weights` record their image size, so a non-square grid is resampled
correctly too.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import Tensor

from collab_distill.errors import UserError

log = logging.getLogger(__name__)

_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_IMG_SIZE_KEY = "img_size"


class WeightsError(UserError, RuntimeError):
    """A weight file is missing, unreadable, holds non-finite values or does not match the model."""


class NonFiniteWeightsError(UserError, RuntimeError):
    """A model about to be saved holds a NaN or an infinity (the run diverged)."""


def read_state_dict(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a ``.safetensors`` file, or tensors of a torch file (``weights_only``),
    every floating-point tensor checked to be finite.

    A torch file may hold the state dict itself or wrap it under ``model`` or ``state_dict``.

    Raises:
        WeightsError: the file does not exist, has an unknown suffix, cannot be read (e.g. truncated)
            or holds a NaN or an infinity.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file not found: {path} (set 'weights' to an existing .safetensors/.pth "
                           "file, 'hub' to download timm's pretrained weights, or 'random')")
    if path.suffix == ".safetensors":
        state, metadata = read_safetensors(path)
    elif path.suffix in _TORCH_SUFFIXES:
        state, metadata = _read_torch_file(path), {}
    else:
        raise WeightsError(f"{path}: unknown weight file suffix {path.suffix!r} "
                           f"(expected .safetensors or one of {', '.join(_TORCH_SUFFIXES)})")
    bad = nonfinite_names(state)
    if bad:
        raise WeightsError(f"{path}: {len(bad)} tensors hold NaN or inf ({_preview(bad)}); the run that wrote "
                           "it diverged: use weights of an earlier checkpoint or train again")
    return state, metadata


def read_safetensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, as stored (no finiteness check).

    Raises:
        WeightsError: the file is missing or damaged (truncated, not safetensors); the message names it.
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: f.get_tensor(key) for key in f.keys()}, f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{path}: cannot read this safetensors file ({exc}); it is damaged or "
                           "truncated: write or download it again") from exc


def _read_torch_file(path: Path) -> dict[str, Tensor]:
    """The state dict of a torch file, unwrapped from ``model`` / ``state_dict`` if needed."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    # a damaged file raises RuntimeError/EOFError; an object that weights_only refuses raises
    # pickle.UnpicklingError, a PickleError (named through torch, so this module imports no pickle)
    except (RuntimeError, OSError, EOFError, torch.serialization.pickle.PickleError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path}: cannot read this torch weight file ({reason})") from exc
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    return obj


def nonfinite_names(state: Mapping[str, Tensor]) -> list[str]:
    """Keys of the floating-point tensors of ``state`` that hold a NaN or an infinity, in key order."""
    return [key for key, value in state.items()
            if value.is_floating_point() and not bool(torch.isfinite(value).all())]


def check_finite_weights(state: Mapping[str, Tensor], what: str) -> None:
    """Refuse to save a diverged model: raise :class:`NonFiniteWeightsError` if a parameter or buffer
    of ``state`` holds a NaN or an infinity. ``what`` says whose state it is (e.g. "step 12")."""
    bad = nonfinite_names(state)
    if bad:
        raise NonFiniteWeightsError(
            f"{what}: training diverged, {len(bad)} parameters/buffers hold NaN or inf ({_preview(bad, 3)}); "
            "nothing was saved. Set optim.grad_clip > 0 and --resume from an earlier checkpoint, or lower "
            "optim.lr and train again with --overwrite (a resumed run keeps the checkpoint's lr)")


def load_vit_weights(model: VisionTransformer, path: str | Path, strict: bool = True) -> None:
    """Load a timm- or DINOv2-format file into ``model`` (positional embedding resampled as needed).

    Raises:
        WeightsError: missing, unreadable or non-finite file (:func:`read_state_dict`), or (when ``strict``)
            missing/unexpected/mis-shaped keys.
    """
    state, metadata = read_state_dict(path)
    if _IMG_SIZE_KEY in metadata and "pos_embed" in state:
        state["pos_embed"] = _resample_saved_pos_embed(model, state["pos_embed"], metadata[_IMG_SIZE_KEY])
    state = checkpoint_filter_fn(state, model)
    own = model.state_dict()
    mismatched = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    if mismatched:
        raise WeightsError(f"{path}: shape mismatch for {_preview(mismatched)} "
                           f"(e.g. {mismatched[0]}: file {tuple(state[mismatched[0]].shape)}, "
                           f"model {tuple(own[mismatched[0]].shape)}); is it the right architecture?")
    result = model.load_state_dict(state, strict=False)
    problems = [f"{len(keys)} {kind} keys: {_preview(keys)}"
                for kind, keys in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys))
                if keys]
    if problems:
        message = f"{path}: " + "; ".join(problems)
        if strict:
            raise WeightsError(message + " (set strict: false to load anyway)")
        log.warning("%s (loaded anyway: strict is false)", message)


def write_safetensors(state: Mapping[str, Tensor], path: Path, metadata: Mapping[str, str] | None = None) -> str:
    """Write ``state`` as safetensors to ``path`` via a temporary name and a rename; returns its sha256 (hex)."""
    data = safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in state.items()},
                             dict(metadata) if metadata else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def save_vit_weights(model: VisionTransformer, path: str | Path) -> Path:
    """Write ``model``'s timm-format state dict as safetensors (atomically), recording its image size.

    Raises:
        NonFiniteWeightsError: a parameter or buffer holds NaN or inf (nothing is written).
    """
    path = Path(path)
    height, width = model.patch_embed.img_size
    state = model.state_dict()
    check_finite_weights(state, str(path))
    write_safetensors(state, path, {_IMG_SIZE_KEY: f"{height},{width}"})
    return path


def _resample_saved_pos_embed(model: VisionTransformer, pos_embed: Tensor, img_size: str) -> Tensor:
    """``(1, prefix + h*w, D)`` embedding of a file saved at ``img_size`` ("H,W") -> the model's grid."""
    patch = model.patch_embed.patch_size
    old_grid = [int(s) // p for s, p in zip(img_size.split(","), patch)]
    new_grid = list(model.patch_embed.grid_size)
    if old_grid == new_grid:
        return pos_embed
    prefix = 0 if model.no_embed_class else model.num_prefix_tokens
    return resample_abs_pos_embed(pos_embed, new_size=new_grid, old_size=old_grid, num_prefix_tokens=prefix)


def _preview(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")
