"""A one-way freeze for encoders: no gradients, eval mode for good, ``.train(True)`` raises."""
from __future__ import annotations

from typing import TypeVar

from torch import nn

M = TypeVar("M", bound="FreezableModule")


class FrozenModuleError(RuntimeError):
    """Something tried to train or re-enable gradients of a frozen module."""


class FreezableModule(nn.Module):
    """``nn.Module`` with :meth:`freeze`. After it, ``train(False)``/``eval()`` still work, but
    ``train(True)`` and ``requires_grad_(True)`` raise :class:`FrozenModuleError`.

    A parent module that holds a frozen encoder must not call ``train(True)`` on it: override the
    parent's ``train`` to skip frozen children (or keep the frozen encoder out of the parent).
    """

    _frozen: bool = False

    @property
    def frozen(self) -> bool:
        return self._frozen

    def freeze(self: M) -> M:
        """Disable gradients and switch to eval mode, permanently. Returns ``self``."""
        self.requires_grad_(False)
        self.train(False)
        self._frozen = True
        return self

    def train(self: M, mode: bool = True) -> M:
        if mode and self._frozen:
            raise FrozenModuleError(f"{type(self).__name__} is frozen: it stays in eval mode; "
                                    "train(True) is not allowed (call train() on the trainable parts only)")
        return super().train(mode)

    def requires_grad_(self: M, requires_grad: bool = True) -> M:
        if requires_grad and self._frozen:
            raise FrozenModuleError(f"{type(self).__name__} is frozen: its parameters cannot require grad")
        return super().requires_grad_(requires_grad)
