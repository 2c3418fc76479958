"""A timm ViT as teacher or student: CLS token, patch-token maps and (on request) attention maps.

Any timm ``VisionTransformer`` works by name; first-class are ``vit_small_patch14_dinov2``,
``vit_base_patch14_dinov2``, their ``_reg4_`` variants and the CPU presets of
:mod:`collab_distill.models.vit_presets`. Images are RGB floats in ``[0, 1]``; ImageNet
normalisation (the model's pretrained mean/std) happens inside.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import timm
import torch
from timm.layers import Attention
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from . import vit_presets  # noqa: F401  (registers the CPU presets in timm)
from .config import WEIGHTS_HUB, WEIGHTS_RANDOM, ImageEncoderConfig
from .frozen import FreezableModule
from .weights import load_vit_weights

log = logging.getLogger(__name__)


@dataclass
class ImageFeatures:
    """What one :meth:`ImageEncoder.forward` returns.

    Attributes:
        cls: ``(B, D)`` class token after the final norm.
        patch: ``(B, D, h, w)`` patch-token maps, one per requested block, in request order.
        attn: ``(B, heads, T, T)`` attention probabilities (``T = prefix tokens + h*w``), one per
            requested attention block, in request order; empty unless asked for.
    """

    cls: Tensor
    patch: list[Tensor]
    attn: list[Tensor]


class ImageEncoder(FreezableModule):
    """Wraps a timm ViT built for a fixed input size ``(H, W)``, multiples of the patch size.

    With ``cfg.grad_checkpointing`` the ViT recomputes its blocks in the backward pass (timm's
    ``set_grad_checkpointing``) while the encoder is in training mode; ``eval()`` and ``freeze()``
    turn it off, ``train()`` on again.

    Args:
        cfg: model name, weights, default feature blocks, norm option, extra timm kwargs,
            gradient checkpointing.
        img_size: ``(H, W)`` of the input images (the data config's ``image_size``).

    Raises:
        ValueError: ``weights`` unset or ``img_size`` not a multiple of the patch size.
        WeightsError: the weight file is missing or does not match (see ``weights.py``).
    """

    def __init__(self, cfg: ImageEncoderConfig, img_size: tuple[int, int]) -> None:
        super().__init__()
        if cfg.weights is None:
            raise ValueError(f"image encoder '{cfg.name}': 'weights' is not set; give a local "
                             f".safetensors/.pth file, '{WEIGHTS_HUB}' to download timm's pretrained "
                             f"weights, or '{WEIGHTS_RANDOM}' for a random initialisation")
        self.cfg = cfg
        self.vit: VisionTransformer = timm.create_model(
            cfg.name, pretrained=cfg.weights == WEIGHTS_HUB, img_size=tuple(img_size), num_classes=0,
            **cfg.model_kwargs)
        if not isinstance(self.vit, VisionTransformer):
            raise ValueError(f"image encoder '{cfg.name}' is a {type(self.vit).__name__}, "
                             "not a timm VisionTransformer")
        patch = self.patch_size
        if img_size[0] % patch or img_size[1] % patch:
            raise ValueError(f"image size {tuple(img_size)} must be a multiple of the patch size {patch}")
        if cfg.weights not in (WEIGHTS_HUB, WEIGHTS_RANDOM):
            load_vit_weights(self.vit, cfg.weights, strict=cfg.strict)
        log.info("image encoder %s (%s weights), input %s", cfg.name, cfg.weights, tuple(img_size))
        data_cfg = self.vit.pretrained_cfg
        self.register_buffer("mean", torch.tensor(data_cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(data_cfg["std"]).view(1, 3, 1, 1), persistent=False)
        self._sync_grad_checkpointing()

    def train(self, mode: bool = True) -> ImageEncoder:
        """Training or eval mode (:class:`FreezableModule` refuses ``True`` once frozen); gradient
        checkpointing (``cfg.grad_checkpointing``) follows the mode."""
        super().train(mode)
        self._sync_grad_checkpointing()
        return self

    def _sync_grad_checkpointing(self) -> None:
        self.vit.set_grad_checkpointing(self.cfg.grad_checkpointing and self.training)

    # ------------------------------------------------------------------ properties
    @property
    def patch_size(self) -> int:
        return self.vit.patch_embed.patch_size[0]

    @property
    def embed_dim(self) -> int:
        return self.vit.embed_dim

    @property
    def depth(self) -> int:
        return len(self.vit.blocks)

    @property
    def num_heads(self) -> int:
        return self.vit.blocks[0].attn.num_heads

    @property
    def num_prefix_tokens(self) -> int:
        """Class token plus register tokens, in front of the ``h*w`` patch tokens."""
        return self.vit.num_prefix_tokens

    @property
    def grid_size(self) -> tuple[int, int]:
        """``(h, w)`` of the patch-token maps."""
        return tuple(self.vit.patch_embed.grid_size)

    # ------------------------------------------------------------------ forward
    def forward(self, images: Tensor, blocks: Sequence[int] | None = None,
                attn_blocks: Sequence[int] = ()) -> ImageFeatures:
        """Encode ``(B, 3, H, W)`` RGB images in ``[0, 1]``.

        Args:
            images: ``(B, 3, H, W)`` float, the size given at construction.
            blocks: blocks whose patch maps to return (negative counts from the end); default
                ``cfg.blocks``. The final norm is applied to them when ``cfg.norm``.
            attn_blocks: blocks whose attention maps to return; none by default (then every block
                keeps its fused attention kernel).
        """
        if not images.is_floating_point():
            raise TypeError(f"images must be float in [0, 1], got {images.dtype} (uint8 batches become floats "
                            "with collab_distill.methods.common.float_images)")
        blocks = [self._block_index(i) for i in (self.cfg.blocks if blocks is None else blocks)]
        attn_blocks = [self._block_index(i) for i in attn_blocks]
        taken = sorted(set(blocks)) or [self.depth - 1]          # timm needs one; the CLS comes from the last
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        recomputed = self.vit.grad_checkpointing and torch.is_grad_enabled()
        with _capture_attention(self.vit, attn_blocks, keep_explicit=recomputed) as attn:
            final, maps = self.vit.forward_intermediates(x, indices=taken, norm=self.cfg.norm, output_fmt="NCHW")
        patch = dict(zip(taken, maps))
        return ImageFeatures(cls=final[:, 0], patch=[patch[i] for i in blocks], attn=[attn[i] for i in attn_blocks])

    def _block_index(self, index: int) -> int:
        if not -self.depth <= index < self.depth:
            raise IndexError(f"block {index} out of range for a ViT of depth {self.depth}")
        return index % self.depth


@contextlib.contextmanager
def _capture_attention(vit: VisionTransformer, indices: Sequence[int],
                       keep_explicit: bool = False) -> Iterator[dict[int, Tensor]]:
    """Within the block, the attention probabilities ``(B, heads, T, T)`` of blocks ``indices``.

    Those blocks switch to timm's explicit softmax path for the call (the fused kernel does not
    expose the probabilities) and a hook on their ``attn_drop`` records its input, i.e. the
    softmax output before dropout; gradients flow through it. Other blocks are untouched.
    With ``keep_explicit`` (gradient checkpointing: the backward pass recomputes each block and
    must repeat the operations of the forward pass) those blocks keep the explicit path after the
    call, for good: the same values, without the fused kernel's saving.
    """
    captured: dict[int, Tensor] = {}
    handles, modules = [], []
    try:
        for index in sorted(set(indices)):
            attn = vit.blocks[index].attn
            if not isinstance(attn, Attention):
                raise NotImplementedError(f"attention maps need timm's Attention; block {index} has "
                                          f"{type(attn).__name__}")
            modules.append((attn, attn.fused_attn))
            attn.fused_attn = False
            handles.append(attn.attn_drop.register_forward_hook(
                lambda _m, inputs, _out, i=index: captured.__setitem__(i, inputs[0])))
        yield captured
    finally:
        for handle in handles:
            handle.remove()
        if not keep_explicit:
            for attn, fused in modules:
                attn.fused_attn = fused
