"""What every training method is: an ``nn.Module`` whose ``forward(batch)`` returns losses and logs,
and which declares its trainable and frozen parts."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from collab_distill.models.frozen import FreezableModule
from collab_distill.models.weights import check_finite_weights


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
        """Write one ``<module>.safetensors`` per trainable module to ``weights_dir``; returns the paths.

        Every file is written to a temporary name and renamed, and nothing is written when a parameter
        or buffer holds a NaN or an infinity.

        Raises:
            NonFiniteWeightsError: the model diverged.
        """
        states = {name: {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
                  for name, module in self.trainable_modules().items()}
        check_finite_weights({f"{name}.{k}": v for name, state in states.items() for k, v in state.items()},
                             f"export to {weights_dir}")
        weights_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, state in states.items():
            path = weights_dir / f"{name}.safetensors"
            tmp = path.with_name(f".{path.name}.tmp")
            save_file(state, str(tmp))
            os.replace(tmp, path)
            paths.append(path)
        return paths

    def forward(self, batch: dict) -> MethodOutput:  # noqa: D102
        raise NotImplementedError
