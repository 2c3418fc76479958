"""Precompute the frozen encoder's features once, then train heads on them quickly on a CPU.

The bank keeps features in float16 and the dense targets of every view in memory; a head then
costs one small matmul per step. No augmentation is possible on precomputed features (the recipe
in every result says so).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import Tensor, nn
from tqdm import tqdm

from collab_distill.probe.data import ProbeView
from collab_distill.probe.encoder import probe_features

STORE_DTYPE = torch.float16


@dataclass
class FeatureBank:
    """Features and targets of ``N`` views.

    Attributes:
        patch: ``(N, C, h, w)`` float16 patch maps (blocks concatenated).
        cls: ``(N, C)`` float16 CLS tokens of the same blocks, or None.
        label: ``(N, H, W)`` uint8 class maps (``IGNORE`` = unlabelled), or None.
        depth: ``(N, H, W)`` float32 depth maps (0 = unknown), or None.
        tags: condition tags per view.
        names: view names.
    """

    patch: Tensor
    cls: Tensor | None
    label: Tensor | None
    depth: Tensor | None
    tags: list[tuple[str, ...]]
    names: list[str]

    def __len__(self) -> int:
        return len(self.patch)

    @property
    def in_dim(self) -> int:
        """Channels of :meth:`head_input`."""
        return self.patch.shape[1] + (self.cls.shape[1] if self.cls is not None else 0)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the targets."""
        target = self.label if self.label is not None else self.depth
        return tuple(target.shape[-2:])

    def head_input(self, index: Tensor) -> Tensor:
        """``(b, C', h, w)`` float32 head input of views ``index``: the patch maps, then (when
        present) the CLS tokens broadcast to every position (channel order does not matter to a
        linear head)."""
        patch = self.patch[index].float()
        if self.cls is None:
            return patch
        cls = self.cls[index].float()[:, :, None, None].expand(-1, -1, *patch.shape[-2:])
        return torch.cat([patch, cls], dim=1)


@torch.no_grad()
def precompute(encoder: nn.Module, batches: Iterable[list[ProbeView]], blocks: Sequence[int],
               cls_token: bool, progress: bool = True, desc: str = "features") -> FeatureBank:
    """Run ``encoder`` once over every view of ``batches`` (lists of views, e.g. a DataLoader with
    :func:`~collab_distill.probe.data.collate_views`). ``encoder``: an
    :class:`~collab_distill.models.ImageEncoder`, or a module whose call forwards to one (e.g.
    :class:`~collab_distill.defense.ASVPDefense`)."""
    device = next(encoder.parameters()).device       # a wrapper's parameters are those of what it wraps
    patches, cls_list, labels, depths, tags, names = [], [], [], [], [], []
    for views in tqdm(batches, desc=desc, unit="batch", disable=not progress):
        images = torch.stack([v.image for v in views]).to(device)
        patch, cls = probe_features(encoder, images, blocks, cls_token)
        patches.append(patch.to("cpu", STORE_DTYPE))
        if cls is not None:
            cls_list.append(cls.to("cpu", STORE_DTYPE))
        labels.extend(v.label for v in views)
        depths.extend(v.depth for v in views)
        tags.extend(v.tags for v in views)
        names.extend(v.name for v in views)
    if not patches:
        raise ValueError("no views to compute features of")
    return FeatureBank(torch.cat(patches), torch.cat(cls_list) if cls_list else None,
                       _stack_or_none(labels), _stack_or_none(depths), tags, names)


def _stack_or_none(maps: list[Tensor | None]) -> Tensor | None:
    if any(m is None for m in maps):
        return None
    return torch.stack(maps)
