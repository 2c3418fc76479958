"""Projection heads from an encoder's width to the teacher's width."""
from __future__ import annotations

from torch import Tensor, nn

from .config import HeadConfig
from .frozen import FreezableModule


class ProjectionHead(FreezableModule):
    """``linear``: one ``Linear``; ``mlp``: ``Linear -> GELU -> Linear`` (hidden width ``cfg.hidden_dim``,
    or ``out_dim`` when 0). Acts on the last dimension: ``(..., in_dim) -> (..., out_dim)``.
    """

    def __init__(self, cfg: HeadConfig, in_dim: int, out_dim: int) -> None:
        super().__init__()
        if cfg.kind == "linear":
            self.net: nn.Module = nn.Linear(in_dim, out_dim)
        elif cfg.kind == "mlp":
            hidden = cfg.hidden_dim or out_dim
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        else:
            raise ValueError(f"head kind must be 'linear' or 'mlp', got {cfg.kind!r}")

    def forward(self, x: Tensor) -> Tensor:
        """``(..., in_dim) -> (..., out_dim)``."""
        return self.net(x)
