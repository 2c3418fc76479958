"""Pieces the methods share: their config section, building encoders, loading exported weights, float images."""
from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from torch import Tensor, nn

from collab_distill.config import ConfigError, RunConfig
from collab_distill.methods.config import MethodSection
from collab_distill.models import ImageEncoder
from collab_distill.models.weights import WeightsError, read_state_dict

S = TypeVar("S", bound=MethodSection)


def method_section(cfg: RunConfig, kind: type[S]) -> S:
    """``cfg.method``, the section of type ``kind`` that a method reads.

    Raises:
        ConfigError: ``cfg.method`` is another method's section (a config built in code).
    """
    if not isinstance(cfg.method, kind):
        raise ConfigError(f"method.name={cfg.method.name!r} has a {type(cfg.method).__name__} section; this method "
                          f"reads a {kind.__name__}")
    return cfg.method


def build_image_encoder(cfg: RunConfig) -> ImageEncoder:
    """The ViT of ``model.image`` at ``data.image_size``."""
    return ImageEncoder(cfg.model.image, tuple(cfg.data.image_size))


def load_module_weights(module: nn.Module, folder: str | Path, name: str, setting: str) -> None:
    """Load ``<folder>/<name>.safetensors`` (as exported by the trainer) into ``module`` (strict).

    ``setting`` is what the user set ``folder`` with (a config key or a flag); a missing file names it.

    Raises:
        WeightsError: the file is missing, damaged or holds non-finite values.
    """
    path = Path(folder) / f"{name}.safetensors"
    if not path.is_file():
        raise WeightsError(f"{path} not found: point {setting} at the weights/ folder of a stage-1 run (it "
                           "holds point_encoder.safetensors and head.safetensors)")
    module.load_state_dict(read_state_dict(path)[0])  # names the file if it is damaged or non-finite


def float_images(batch: dict) -> dict:
    """``batch`` with its ``images`` as float32 in ``[0, 1]``: uint8 images (``data.image_dtype=uint8``)
    are divided by 255 where they are (the training device, at the start of the step: the same values as
    the dataset's float32 images); float images and a batch without images are returned as they are."""
    images = batch.get("images")
    if images is None or images.is_floating_point():
        return batch
    return {**batch, "images": images.float().div_(255.0)}


def pair_samples(batch: dict[str, Tensor]) -> Tensor:
    """``(P,)`` sample index of each pair."""
    return batch["image_sample"][batch["pair_image"]]
