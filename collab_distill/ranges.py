"""Declarative value ranges of config fields: ``batch_size: PositiveInt = 2``.

A schema field annotated ``Annotated[int, Range(ge=1)]`` (or one of the aliases below) is checked by
``collab_distill.config.load_config`` after its type: a value outside the range is one
``ConfigError`` line naming the key, where it was set, the range and the value. This module imports
nothing of the project, so every schema module (models, probes, the synthetic world) can use it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated


@dataclass(frozen=True)
class Range:
    """An interval of allowed numbers; each bound is optional (``ge``/``gt`` below, ``le``/``lt`` above).

    NaN is never inside a range (every comparison with it is false).
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def __contains__(self, value: float) -> bool:
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def __str__(self) -> str:
        """``>= 1``, ``> 0``, ``<= 5`` or ``in [0, 1)``: the form a user reads in an error."""
        low = (f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else None)
        high = (f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else None)
        if low and high:
            return f"in {low}, {high}"
        if low:
            return (">= " if low[0] == "[" else "> ") + low[1:]
        if high:
            return ("<= " if high[-1] == "]" else "< ") + high[:-1]
        return "any number"


PositiveInt = Annotated[int, Range(ge=1)]            # counts that must be at least one: batch sizes, epochs
NonNegativeInt = Annotated[int, Range(ge=0)]         # counts where 0 means "none" / "off": warm-up, max_steps
PositiveFloat = Annotated[float, Range(gt=0)]        # scales: lr, voxel size, minimum depth
NonNegativeFloat = Annotated[float, Range(ge=0)]     # loss weights, weight decay, clip norms (0: off)
UnitInterval = Annotated[float, Range(ge=0, le=1)]   # probabilities and ratios
Momentum = Annotated[float, Range(ge=0, lt=1)]       # Adam betas, EMA momentum: 1 would never move
Severity = Annotated[int, Range(ge=1, le=5)]         # corruption severity levels (docs/degradations.md)
