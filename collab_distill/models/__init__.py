"""Models: timm image encoder, spconv point encoder, projection heads, feature sampling.

``PointEncoder`` is imported lazily: spconv takes about 5 s to import.
"""
from typing import Any

from .config import HeadConfig, ImageEncoderConfig, ModelConfig, PointEncoderConfig
from .frozen import FreezableModule, FrozenModuleError
from .heads import ProjectionHead
from .image_encoder import ImageEncoder, ImageFeatures
from .sampling import sample_features
from .weights import WeightsError, load_vit_weights, save_vit_weights

__all__ = [
    "FreezableModule", "FrozenModuleError", "HeadConfig", "ImageEncoder", "ImageEncoderConfig",
    "ImageFeatures", "ModelConfig", "PointEncoder", "PointEncoderConfig", "ProjectionHead", "WeightsError",
    "load_vit_weights", "sample_features", "save_vit_weights",
]


def __getattr__(name: str) -> Any:
    if name == "PointEncoder":
        from .point_encoder import PointEncoder

        return PointEncoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
