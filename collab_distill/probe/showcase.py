"""A few evaluation views saved with a probe result, for the report's figures.

``<task>_showcase.safetensors`` holds, for ``S`` views chosen the same way in every run (so the
report can put methods side by side):

=====================  ==================  ===================================================
tensor                 shape, dtype        meaning
=====================  ==================  ===================================================
image                  (S, 3, H, W) uint8  the view
reference              (S, 3, H, W) uint8  its clear reference (zeros where none)
has_reference          (S,) bool
features               (S, D, h, w) f16    encoder, last block after the final norm, on ``image``
reference_features     (S, D, h, w) f16    the same encoder on ``reference``
prediction             (S, H, W)           the probe's output: uint8 classes or float32 metres
target                 (S, H, W)           ground truth: uint8 classes (255 unlabelled) or metres (0)
=====================  ==================  ===================================================

The metadata (JSON strings) gives ``task``, ``names``, ``tags`` and ``classes``.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor


@dataclass
class Showcase:
    """The content of a showcase file (shapes in the module docstring)."""

    task: str
    names: list[str]
    tags: list[tuple[str, ...]]
    classes: list[str]
    image: Tensor
    reference: Tensor
    has_reference: Tensor
    features: Tensor
    reference_features: Tensor
    prediction: Tensor
    target: Tensor

    TENSORS = ("image", "reference", "has_reference", "features", "reference_features", "prediction", "target")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"task": self.task, "names": json.dumps(self.names), "tags": json.dumps([list(t) for t in self.tags]),
                "classes": json.dumps(self.classes)}
        save_file({k: getattr(self, k).contiguous() for k in self.TENSORS}, str(path), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Showcase":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        return cls(meta["task"], json.loads(meta["names"]), [tuple(t) for t in json.loads(meta["tags"])],
                   json.loads(meta["classes"]), **{k: tensors[k] for k in cls.TENSORS})


def condition_key(tags: tuple[str, ...]) -> str:
    """``night+rain`` for ``("night", "rain")``; ``none`` for no tag."""
    return "+".join(tags) or "none"


def select_showcase(names: Sequence[str], tags: Sequence[tuple[str, ...]], per_condition: int,
                    preferred: str = "CAM_FRONT") -> list[int]:
    """Indices of up to ``per_condition`` views per condition set, front cameras first, then in order.
    ``names`` and ``tags`` are read in two passes, item by item (they may be read lazily from a store)."""
    chosen: dict[str, list[int]] = {}
    for front in (True, False):
        for i in range(len(names)):
            if names[i].endswith(preferred) != front:
                continue
            group = chosen.setdefault(condition_key(tags[i]), [])
            if len(group) < per_condition:
                group.append(i)
    return sorted(i for group in chosen.values() for i in group)


def to_uint8(images: Tensor) -> Tensor:
    """``(..., 3, H, W)`` float in [0, 1] -> uint8."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)
