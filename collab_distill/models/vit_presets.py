"""Small DINOv2-architecture ViTs for CPU runs and tests, registered in timm's model registry.

They are ``vit_*_patch14_dinov2`` with fewer, narrower blocks (patch 14, LayerScale, class token,
ImageNet mean/std, a 518-pixel reference grid), so every code path of the real teachers, including
loading original-DINOv2-format checkpoints, runs on them. They have no pretrained weights.

=========================  =====  =====  =====  ===========
name                       width  depth  heads  params
=========================  =====  =====  =====  ===========
``vit_tiny_patch14_cpu``    192     6      3    ~2.9 M
``vit_pico_patch14_cpu``     64     3      2    ~0.2 M (tests)
=========================  =====  =====  =====  ===========
"""
from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

_DINOV2_ARCH = dict(patch_size=14, init_values=1e-5)

default_cfgs = generate_default_cfgs({
    name: dict(url="", num_classes=0, input_size=(3, 518, 518), fixed_input_size=True,
               interpolation="bicubic", crop_pct=1.0, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
               first_conv="patch_embed.proj", classifier="head", license="apache-2.0")
    for name in ("vit_tiny_patch14_cpu", "vit_pico_patch14_cpu")
})


def _create(variant: str, pretrained: bool, arch: dict[str, Any], **kwargs: Any) -> VisionTransformer:
    """Build ``variant`` with the DINOv2 defaults, then ``arch``, then caller ``kwargs`` on top."""
    return build_model_with_cfg(VisionTransformer, variant, pretrained,
                                pretrained_filter_fn=checkpoint_filter_fn,
                                **{**_DINOV2_ARCH, **arch, **kwargs})


@register_model
def vit_tiny_patch14_cpu(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """DINOv2-style ViT, width 192, depth 6, 3 heads: the CPU teacher/student of the embedded default."""
    return _create("vit_tiny_patch14_cpu", pretrained, dict(embed_dim=192, depth=6, num_heads=3), **kwargs)


@register_model
def vit_pico_patch14_cpu(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """DINOv2-style ViT, width 64, depth 3, 2 heads: for unit tests."""
    return _create("vit_pico_patch14_cpu", pretrained, dict(embed_dim=64, depth=3, num_heads=2), **kwargs)
