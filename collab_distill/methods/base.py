"""What every training method is: an ``nn.Module`` whose ``forward(batch)`` returns losses and logs,
and which declares its trainable and frozen parts."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import yaml
from torch import nn

from collab_distill.models.export import export_vit
from collab_distill.models.frozen import FreezableModule
from collab_distill.models.image_encoder import ImageEncoder
from collab_distill.models.weights import check_finite_weights, write_safetensors

if TYPE_CHECKING:
    from collab_distill.config import RunConfig


@dataclass
class MethodOutput:
    """``loss``: the scalar to back-propagate; ``logs``: detached scalars to log (loss terms, stats)."""

    loss: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


class Method(nn.Module):
    """Base class. Subclasses register their modules, then list them in :meth:`trainable_names`.

    Every module not listed as trainable is frozen: ``requires_grad=False`` and eval mode, and
    ``train()`` on the method only switches the trainable modules to training mode.
    """

    #: Whether the method reads the LiDAR points; without them the dataset neither loads nor voxelises any.
    needs_points: ClassVar[bool] = True

    @classmethod
    def dataset_options(cls, cfg: RunConfig) -> dict[str, Any]:
        """Keyword arguments of the training :class:`~collab_distill.data.dataset.PairedDataset` this method
        reads (``with_points``: False when it needs no LiDAR)."""
        return {"with_points": cls.needs_points}

    def trainable_names(self) -> tuple[str, ...]:
        """Names of the child modules that learn."""
        raise NotImplementedError

    def trainable_modules(self) -> dict[str, nn.Module]:
        """Child modules that learn, by name."""
        return {name: getattr(self, name) for name in self.trainable_names()}

    def frozen_modules(self) -> dict[str, nn.Module]:
        """Child modules that never learn, by name."""
        trainable = set(self.trainable_names())
        return {name: m for name, m in self.named_children() if name not in trainable}

    def freeze_the_rest(self) -> None:
        """Turn off gradients of every frozen module for good; call at the end of ``__init__``."""
        for module in self.frozen_modules().values():
            if isinstance(module, FreezableModule):
                module.freeze()
            else:
                module.requires_grad_(False)
                module.eval()

    def state_names(self) -> tuple[str, ...]:
        """Modules whose state is checkpointed: the trainable ones, plus any that change without
        gradients (an EMA teacher)."""
        return self.trainable_names()

    def after_optimizer_step(self) -> None:
        """Hook run after each optimiser step (e.g. an EMA update). Default: nothing."""

    def layer_decay_vit(self) -> ImageEncoder | None:
        """The trainable ViT whose blocks get layer-wise lr decay (``optim.layer_decay < 1``), matched
        by parameter identity whatever its attribute name; None (the default): no such ViT."""
        return None

    def train(self, mode: bool = True) -> "Method":
        self.training = mode
        for module in self.trainable_modules().values():
            module.train(mode)
        return self

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Parameters and buffers of the :meth:`state_names` modules, keys prefixed with the module name."""
        return {f"{name}.{k}": v for name in self.state_names() for k, v in getattr(self, name).state_dict().items()}

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`checkpoint_state` (strict)."""
        for name in self.state_names():
            prefix = name + "."
            getattr(self, name).load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    def export(self, weights_dir: Path) -> list[Path]:
        """Write the trained modules to ``weights_dir``; returns the paths.

        * ``<module>.safetensors`` for every trainable module, the project's keys (the ViT's under ``vit.``),
          read by stage 2 and the probes;
        * for every trainable ViT (an :class:`ImageEncoder`), what other code bases load
          (:func:`~collab_distill.models.export.export_vit`): ``<module>_timm/`` (timm hub-style folder)
          and, for a DINOv2 architecture, ``<module>_dinov2.safetensors``. Their recipe is the module,
          the method's class and, when ``weights_dir`` lies in a run folder, the run's method name,
          output folder and seed (``config.yaml``) and git sha (``run.json``).

        Every file is written to a temporary name and renamed, and nothing is written when a parameter
        or buffer holds a NaN or an infinity.

        Raises:
            NonFiniteWeightsError: the model diverged.
            ExportError: timm cannot describe a ViT in ``config.json``.
        """
        states = {name: {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
                  for name, module in self.trainable_modules().items()}
        check_finite_weights({f"{name}.{k}": v for name, state in states.items() for k, v in state.items()},
                             f"export to {weights_dir}")
        paths = []
        for name, state in states.items():
            write_safetensors(state, weights_dir / f"{name}.safetensors")
            paths.append(weights_dir / f"{name}.safetensors")
        recipe = {"method_class": type(self).__name__, **_run_recipe(weights_dir.parent)}
        for name, module in self.trainable_modules().items():
            if isinstance(module, ImageEncoder):
                paths += export_vit(module.vit, weights_dir, name, {"module": name, **recipe})
        return paths

    def forward(self, batch: dict) -> MethodOutput:  # noqa: D102
        raise NotImplementedError


def _run_recipe(run_dir: Path) -> dict[str, Any]:
    """``method``, ``output_dir`` and ``seed`` from ``run_dir/config.yaml`` and ``git_sha`` from
    ``run_dir/run.json`` (as :func:`~collab_distill.config.save_run_config` writes them), those present."""
    recipe: dict[str, Any] = {}
    if (run_dir / "config.yaml").is_file():
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        experiment = cfg.get("experiment", {})
        recipe.update(method=cfg.get("method", {}).get("name"), output_dir=experiment.get("output_dir"),
                      seed=experiment.get("seed"))
    if (run_dir / "run.json").is_file():
        recipe["git_sha"] = json.loads((run_dir / "run.json").read_text()).get("git_sha")
    return {k: v for k, v in recipe.items() if v is not None}
