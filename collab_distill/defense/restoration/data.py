"""Paired restoration data from the synthetic world: an adverse camera image and its clear render.

The synthetic generator with ``--paired-clear`` writes, for every adverse sample, the same cameras
rendered in clear daylight to ``<root>/paired_clear/<sample_token>/<CAMERA>.jpg`` (same size and
intrinsics as ``samples/<CAMERA>/...jpg``). A task is one condition: ``fog`` (dehazing), ``rain``
(deraining), ``night`` (low-light enhancement). Samples are split by scene, never within one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from collab_distill.data.infos import SampleInfo, load_infos
from collab_distill.paths import safe_name


@dataclass
class PairedImages:
    """``degraded`` and ``clean``: ``(B, 3, H, W)`` float32 in ``[0, 1]``, row ``i`` of one is the pair of the other."""

    degraded: Tensor
    clean: Tensor

    def evenly(self, count: int) -> "PairedImages":
        """``count`` pairs at evenly spaced indices (all of them when ``count`` is 0 or too large)."""
        n = len(self.degraded)
        if count <= 0 or count >= n:
            return self
        index = torch.linspace(0, n - 1, count).round().long()
        return PairedImages(self.degraded[index], self.clean[index])


@dataclass
class TaskData:
    """One restoration task's training and test pairs and the scenes they come from."""

    condition: str
    train: PairedImages
    test: PairedImages
    train_scenes: list[str]
    test_scenes: list[str]


def _read(path: Path) -> Tensor:
    """``(3, H, W)`` float32 in [0, 1] from an 8-bit RGB file."""
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)


def _pairs(root: Path, samples: list[SampleInfo]) -> PairedImages:
    degraded, clean = [], []
    for info in samples:
        for channel, cam in sorted(info.cameras.items()):
            degraded.append(_read(root / cam.path))
            clean.append(_read(root / "paired_clear" / safe_name(info.token) / f"{safe_name(channel)}.jpg"))
    return PairedImages(torch.stack(degraded), torch.stack(clean))


def load_task(info_dir: str | Path, condition: str, test_scenes: int = 1) -> TaskData:
    """Pairs of the samples whose only condition tag is ``condition``, from ``infos_train.json`` and
    ``infos_val.json`` together; the last ``test_scenes`` scenes (by name) are the test set.

    Raises:
        ValueError: fewer than ``test_scenes + 1`` scenes with that condition, or a missing clear render.
    """
    info_dir = Path(info_dir)
    files = [load_infos(path) for path in sorted(info_dir.glob("infos_*.json"))]
    by_scene: dict[str, list[SampleInfo]] = {}
    for infos in files:
        for info in infos.samples:
            if info.conditions == (condition,):
                by_scene.setdefault(info.scene_name, []).append(info)
    scenes = sorted(by_scene)
    if len(scenes) <= test_scenes:
        raise ValueError(f"{info_dir}: {len(scenes)} scene(s) with condition {condition!r}, need at least "
                         f"{test_scenes + 1} (generate with --conditions {condition} --paired-clear)")
    root = files[0].dataroot
    missing = [s.token for s in by_scene[scenes[0]] if not (root / "paired_clear" / safe_name(s.token)).is_dir()]
    if missing:
        raise ValueError(f"{root}: no paired_clear/ renders for {condition!r} samples (e.g. {missing[0]}); "
                         "generate the set with --paired-clear")
    train, test = scenes[:-test_scenes], scenes[-test_scenes:]
    return TaskData(condition, _pairs(root, [s for n in train for s in by_scene[n]]),
                    _pairs(root, [s for n in test for s in by_scene[n]]), train, test)


def random_crops(pairs: PairedImages, size: int, batch: int, generator: torch.Generator) -> PairedImages:
    """``batch`` aligned random ``size x size`` crops (random image, position and horizontal flip)."""
    n, _, height, width = pairs.degraded.shape
    index = torch.randint(n, (batch,), generator=generator)
    top = torch.randint(height - size + 1, (batch,), generator=generator)
    left = torch.randint(width - size + 1, (batch,), generator=generator)
    flip = torch.rand(batch, generator=generator) < 0.5
    out = []
    for images in (pairs.degraded, pairs.clean):
        crops = torch.stack([images[i, :, t:t + size, l:l + size] for i, t, l in zip(index, top, left)])
        out.append(torch.where(flip[:, None, None, None], crops.flip(-1), crops))
    return PairedImages(*out)
