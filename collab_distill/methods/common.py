"""Pieces the methods share: building encoders from the run config, loading exported weights."""
from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from collab_distill.config import RunConfig
from collab_distill.models import ImageEncoder
from collab_distill.models.weights import WeightsError, read_state_dict


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


def pair_samples(batch: dict[str, Tensor]) -> Tensor:
    """``(P,)`` sample index of each pair."""
    return batch["image_sample"][batch["pair_image"]]
