"""Models: timm image encoder, spconv point encoder, projection heads, feature sampling.

Everything is imported on first use: timm takes ~3 s and spconv ~5 s to import, and the run config
(``collab_distill.config``) needs only the dataclasses of ``models.config``.
"""
from importlib import import_module
from typing import Any

_WHERE = {
    "HeadConfig": "config", "ImageEncoderConfig": "config", "ModelConfig": "config", "PointEncoderConfig": "config",
    "FreezableModule": "frozen", "FrozenModuleError": "frozen", "ProjectionHead": "heads",
    "ImageEncoder": "image_encoder", "ImageFeatures": "image_encoder", "PointEncoder": "point_encoder",
    "sample_features": "sampling", "WeightsError": "weights", "load_vit_weights": "weights",
    "save_vit_weights": "weights",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
