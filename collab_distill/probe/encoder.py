"""The frozen encoder of a probe: loading any weight file a user has, and the probe features.

Two kinds of file are accepted for the probed encoder:

* an ``ImageEncoder`` state dict (keys ``vit.*``), as training runs export the student to
  ``runs/<name>/weights/student.safetensors``; its positional embedding is resampled from the
  training grid (read from ``runs/<name>/config.yaml``) when the probe resolution differs;
* anything ``model.image.weights`` accepts: a timm or original-DINOv2 ViT checkpoint, ``random``, ``hub``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import yaml
from safetensors import safe_open
from timm.layers import resample_abs_pos_embed
from torch import Tensor

from collab_distill.models import ImageEncoder, ImageEncoderConfig, WeightsError
from collab_distill.models.config import WEIGHTS_HUB, WEIGHTS_RANDOM
from collab_distill.models.weights import read_state_dict

ENCODER_PREFIX = "vit."


def encoder_format(weights: str) -> str:
    """``random``, ``hub``, ``image_encoder`` (a run's exported state dict) or ``vit_checkpoint``."""
    if weights in (WEIGHTS_RANDOM, WEIGHTS_HUB):
        return weights
    if Path(weights).suffix == ".safetensors" and Path(weights).is_file():
        with safe_open(weights, framework="pt") as f:  # keys only, without reading the tensors
            keys = list(f.keys())
    else:
        keys = list(read_state_dict(weights)[0])
    return "image_encoder" if keys and all(k.startswith(ENCODER_PREFIX) for k in keys) else "vit_checkpoint"


def load_encoder(cfg: ImageEncoderConfig, weights: str, img_size: tuple[int, int], seed: int = 0) -> ImageEncoder:
    """A frozen :class:`ImageEncoder` of architecture ``cfg`` (its ``norm`` and ``blocks`` apply)
    with ``weights``: an exported ``ImageEncoder`` state dict or anything ``cfg.weights`` accepts.
    ``random`` weights are drawn from ``seed`` (the global RNG is left untouched), so the same
    random encoder comes back every time.

    Raises:
        WeightsError: missing file, or keys/shapes that do not match the architecture.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if encoder_format(weights) != "image_encoder":
            return ImageEncoder(dataclasses.replace(cfg, weights=weights), img_size).freeze()
        encoder = ImageEncoder(dataclasses.replace(cfg, weights=WEIGHTS_RANDOM), img_size)
    state = {k[len(ENCODER_PREFIX):]: v for k, v in read_state_dict(weights)[0].items()}
    if "pos_embed" in state:
        state["pos_embed"] = _fit_pos_embed(encoder, state["pos_embed"], Path(weights))
    try:
        encoder.vit.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{weights}: does not fit {cfg.name}: {str(exc).splitlines()[0]}") from None
    return encoder.freeze()


def _fit_pos_embed(encoder: ImageEncoder, pos_embed: Tensor, path: Path) -> Tensor:
    """Resample a saved ``(1, prefix + h*w, D)`` embedding to ``encoder``'s grid."""
    vit = encoder.vit
    if pos_embed.shape == vit.pos_embed.shape:
        return pos_embed
    prefix = 0 if vit.no_embed_class else vit.num_prefix_tokens
    tokens = pos_embed.shape[1] - prefix
    run_config = path.parent.parent / "config.yaml"
    if run_config.is_file():
        size = yaml.safe_load(run_config.read_text())["data"]["image_size"]
        old_grid = [s // encoder.patch_size for s in size]
    elif math.isqrt(tokens) ** 2 == tokens:
        old_grid = [math.isqrt(tokens)] * 2
    else:
        raise WeightsError(f"{path}: its positional embedding has {tokens} tokens (trained at another "
                           f"resolution) and {run_config} is missing to tell the grid; probe at the training "
                           f"image size or put the run's config.yaml back")
    if old_grid[0] * old_grid[1] != tokens:
        raise WeightsError(f"{path}: {tokens} position tokens do not match the grid {old_grid} of {run_config}")
    return resample_abs_pos_embed(pos_embed, new_size=list(encoder.grid_size), old_size=old_grid,
                                  num_prefix_tokens=prefix)


def describe_weights(weights: str, cfg: ImageEncoderConfig) -> dict[str, Any]:
    """What a result JSON records about an encoder: path, format, architecture, sha256 of the file."""
    out: dict[str, Any] = {"weights": weights, "architecture": cfg.name, "format": encoder_format(weights)}
    if Path(weights).is_file():
        digest = hashlib.sha256()
        with open(weights, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        out["sha256"] = digest.hexdigest()
    return out


def core_encoder(encoder: torch.nn.Module) -> ImageEncoder:
    """The :class:`ImageEncoder` of ``encoder``: itself, or the first one it wraps (e.g. an
    :class:`~collab_distill.defense.ASVPDefense`)."""
    if isinstance(encoder, ImageEncoder):
        return encoder
    found = next((m for m in encoder.modules() if isinstance(m, ImageEncoder)), None)
    if found is None:
        raise TypeError(f"{type(encoder).__name__} holds no ImageEncoder to probe")
    return found


def final_norm(encoder: torch.nn.Module) -> torch.nn.LayerNorm:
    """The final LayerNorm of ``encoder``'s ViT (what a probe store applies at read time).

    Raises:
        WeightsError: the ViT's final norm is not a LayerNorm.
    """
    norm = core_encoder(encoder).vit.norm
    if not isinstance(norm, torch.nn.LayerNorm):
        raise WeightsError(f"the probe store applies the ViT's final norm at read time and needs a LayerNorm; this "
                           f"encoder has {type(norm).__name__}")
    return norm


@contextlib.contextmanager
def without_final_norm(encoder: torch.nn.Module) -> Iterator[None]:
    """Within the block, ``encoder`` (or the :class:`ImageEncoder` it wraps) returns its patch maps before
    the final norm, whatever its ``cfg.norm``."""
    core = core_encoder(encoder)
    saved = core.cfg
    core.cfg = dataclasses.replace(saved, norm=False)
    try:
        yield
    finally:
        core.cfg = saved


@torch.no_grad()
def probe_features(encoder: torch.nn.Module, images: Tensor, blocks: Sequence[int]) -> tuple[Tensor, Tensor]:
    """The un-normed patch maps and CLS tokens of ``blocks`` (what a probe store holds; the final norm
    is applied when a head reads them).

    Args:
        encoder: an :class:`ImageEncoder`, or a module whose call forwards to one (e.g. an ASVP defense).
        images: ``(B, 3, H, W)`` in [0, 1].
        blocks: blocks whose outputs are concatenated channel-wise, in order.

    Returns:
        ``patch (B, n*D, h, w)`` and ``cls (B, n*D)``, before the final norm.
    """
    core = core_encoder(encoder)
    captured: dict[int, Tensor] = {}
    handles = [core.vit.blocks[b % core.depth].register_forward_hook(
        lambda _m, _i, out, i=b % core.depth: captured.__setitem__(i, out[:, 0])) for b in blocks]
    try:
        with without_final_norm(encoder):
            feats = encoder(images, blocks=list(blocks))
    finally:
        for handle in handles:
            handle.remove()
    return torch.cat(feats.patch, dim=1), torch.cat([captured[b % core.depth] for b in blocks], dim=1)
