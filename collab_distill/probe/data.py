"""Probe views: images with dense per-pixel targets, from nuScenes-format info files or a folder.

A :class:`ProbeView` is one image at the probe resolution with ``label (H, W)`` uint8 class indices
(``IGNORE`` = unlabelled) and/or ``depth (H, W)`` float32 metres (0 = no ground truth). The dense maps
live only while a view is loaded: a probe store keeps the sparse targets
(:func:`~collab_distill.probe.store.sparse_targets`).

* nuScenes format (:class:`NuScenesViews`): lidarseg points projected into the images, the 32 fine
  classes mapped to the 16 lidarseg evaluation classes (``ignore`` -> ``IGNORE``); per pixel the
  nearest point wins (a pixel-level z-buffer), for both labels and depth. Adverse samples carry their
  paired clear render (``<dataroot>/paired_clear/<token>/<CAMERA>.jpg``) as ``reference``, clear
  samples themselves.
* Folder (:class:`FolderViews`), for out-of-domain sets a user owns (KITTI, NYUv2, Cityscapes, ADE20K)::

      <root>/<split>/images/<name>.jpg|.png
      <root>/<split>/labels/<name>.png      segmentation: class index per pixel, ignore_index elsewhere
      <root>/<split>/depth/<name>.png       depth: uint16, value / depth_scale = metres, 0 = invalid
      <root>/<split>/conditions.json        optional: {"<name>": ["night", "tunnel", ...]}

  A folder set's tags are any words (``conditions.json``: image stem -> list of tags; not ``all``, the
  group of every view); its vocabulary is the tags present (:meth:`FolderViews.tag_vocabulary`), in
  :func:`ordered_tags` order, and the probes report one group per tag.

Every image is resized to cover the probe size and centre-cropped (``data.transforms.load_image``);
targets follow with nearest-neighbour resampling of the same geometry.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from collab_distill.config import DataConfig
from collab_distill.data.conditions import CONDITION_TAGS
from collab_distill.data.dataset import PairedDataset
from collab_distill.data.taxonomy import IGNORE, LIDARSEG_CLASSES, NAME_TO_INDEX, fine_to_eval_lut
from collab_distill.data.transforms import load_image
from collab_distill.paths import safe_name
from collab_distill.probe.config import FolderConfig, ProbeError

NOISE_INDEX = NAME_TO_INDEX["noise"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ALL = "all"  # the result group of every view: not a tag
MAX_TAGS = 63  # a store keeps a view's tags as an int64 bitmask


def ordered_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """``tags`` without repeats: the condition tags first, in :data:`CONDITION_TAGS` order, then the
    others sorted (the order of a store's tag vocabulary and of the result groups)."""
    tags = set(tags)
    return (*(t for t in CONDITION_TAGS if t in tags), *sorted(tags - set(CONDITION_TAGS)))


@dataclass
class ProbeView:
    """One image and its ground truth at the probe resolution ``(H, W)``.

    Attributes:
        image: ``(3, H, W)`` float in [0, 1].
        label: ``(H, W)`` uint8 class index, ``IGNORE`` where unlabelled; None for a depth-only set.
        depth: ``(H, W)`` float32 metres, 0 where unknown; None for a segmentation-only set.
        tags: its tags (members of the set's ``tag_vocabulary``, possibly none).
        name: ``<sample token>/<CAMERA>`` or the file stem.
        reference: ``(3, H, W)`` clear image of the same view (paired clear render, or the image itself
            when it is clear), when asked for and available.
    """

    image: Tensor
    label: Tensor | None
    depth: Tensor | None
    tags: tuple[str, ...]
    name: str
    reference: Tensor | None = None


def collate_views(items: list[list[ProbeView]]) -> list[ProbeView]:
    """``collate_fn``: the per-item lists of views, flattened."""
    return [view for item in items for view in item]


def rasterize_points(uv: Tensor, image_idx: Tensor, depth: Tensor, labels: Tensor | None, num_images: int,
                     size: tuple[int, int]) -> tuple[Tensor | None, Tensor]:
    """Nearest point per pixel -> dense maps.

    Args:
        uv: ``(P, 2)`` float pixel coordinates (column, row), inside the image.
        image_idx: ``(P,)`` image of each point.
        depth: ``(P,)`` metres (> 0).
        labels: ``(P,)`` class per point (``IGNORE`` allowed) or None.
        num_images: ``M``.
        size: ``(H, W)``.

    Returns:
        ``label (M, H, W)`` uint8 (``IGNORE`` where no point; None without ``labels``) and
        ``depth (M, H, W)`` float32 (0 where no point); at a pixel hit by several points, the nearest.
    """
    height, width = size
    cols = uv[:, 0].round().long().clamp(0, width - 1)
    rows = uv[:, 1].round().long().clamp(0, height - 1)
    key = (image_idx.long() * height + rows) * width + cols
    by_depth = torch.argsort(depth, stable=True)
    order = by_depth[torch.argsort(key[by_depth], stable=True)]  # by pixel, nearest first
    first = torch.ones(len(order), dtype=torch.bool)
    first[1:] = key[order[1:]] != key[order[:-1]]
    nearest = order[first]
    depth_map = torch.zeros(num_images * height * width, dtype=torch.float32)
    depth_map[key[nearest]] = depth[nearest].float()
    label_map = None
    if labels is not None:
        label_map = torch.full((num_images * height * width,), IGNORE, dtype=torch.uint8)
        label_map[key[nearest]] = labels[nearest].to(torch.uint8)
    return (label_map.view(num_images, height, width) if label_map is not None else None,
            depth_map.view(num_images, height, width))


class NuScenesViews(Dataset):
    """The camera views of one split's keyframes (eval-mode resize + centre crop, no augmentation).

    Args:
        data: the probe's data section; ``split`` and ``conditions`` select the samples.
        seed: seeds the camera choice when ``data.cameras`` is ``[random]``.
        drop_noise_depth: leave points labelled ``noise`` out of the depth ground truth.
        with_reference: attach the clear reference image of each view (for feature fidelity).
    """

    classes = LIDARSEG_CLASSES
    #: The tags a view may carry: the five condition tags, whether present or not.
    tag_vocabulary = CONDITION_TAGS

    def __init__(self, data: DataConfig, seed: int = 0, drop_noise_depth: bool = True,
                 with_reference: bool = False) -> None:
        self.pairs = PairedDataset(dataclasses.replace(data, augment=False, max_points=0, image_dtype="float32"),
                                   seed=seed, train=False)
        self.size = tuple(data.image_size)
        self.drop_noise_depth = drop_noise_depth
        self.with_reference = with_reference
        self.lut = torch.from_numpy(fine_to_eval_lut())  # fine index -> probe class, ignore -> IGNORE

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def targets(self) -> tuple[str, ...]:
        """The targets the views carry: ``label`` (when the samples have lidarseg labels) and ``depth``."""
        return ("label", "depth") if self.pairs.samples[0].lidarseg_path else ("depth",)

    def view_counts(self) -> np.ndarray:
        """``(len(self),)`` int64 views of each item (its cameras under ``data.cameras``), no item loaded."""
        cameras, samples = self.pairs.cfg.cameras, self.pairs.samples
        if cameras == ["random"]:
            return np.ones(len(samples), dtype=np.int64)
        if cameras == ["all"]:
            return samples.store.cameras_present(samples.indices).sum(axis=1).astype(np.int64)
        return np.full(len(samples), len(cameras), dtype=np.int64)

    def __getitem__(self, index: int) -> list[ProbeView]:
        item = self.pairs[index]
        num_images = len(item["images"])
        fine = item["labels"][item["pair_point"]] if item["labels"] is not None else None
        labels = self.lut[fine] if fine is not None else None
        label_map, depth_map = rasterize_points(item["pair_uv"], item["pair_image"], item["pair_depth"], labels,
                                                num_images, self.size)
        if fine is not None and self.drop_noise_depth:
            solid = fine != NOISE_INDEX
            _, depth_map = rasterize_points(item["pair_uv"][solid], item["pair_image"][solid],
                                            item["pair_depth"][solid], None, num_images, self.size)
        info = self.pairs.samples[index]
        tags = tuple(t for t in CONDITION_TAGS if t in info.conditions)
        views = []
        for m, channel in enumerate(item["cameras"]):
            reference = self._reference(info, channel, item["images"][m], tags) if self.with_reference else None
            views.append(ProbeView(item["images"][m], label_map[m] if label_map is not None else None,
                                   depth_map[m], tags, f"{info.token}/{channel}", reference))
        return views

    def _reference(self, info: Any, channel: str, image: Tensor, tags: tuple[str, ...]) -> Tensor | None:
        path = self.pairs.root / "paired_clear" / safe_name(info.token) / f"{safe_name(channel)}.jpg"
        if path.is_file():
            cam = info.cameras[channel]
            return load_image(path, self.size, cam.K, np.random.default_rng(0))[0]
        return image if tags == ("clear",) else None


class FolderViews(Dataset):
    """A folder set (layout in the module docstring) for one task and split."""

    def __init__(self, cfg: FolderConfig, split: str, task: str, image_size: tuple[int, int]) -> None:
        base = Path(cfg.root) / split
        target_dir = base / ("labels" if task == "seg" else "depth")
        images = sorted(p for p in (base / "images").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise ProbeError(f"{base / 'images'}: no .jpg/.png images (folder layout: docs/probes.md)")
        missing = [p.stem for p in images if not (target_dir / f"{p.stem}.png").is_file()]
        if missing:
            raise ProbeError(f"{target_dir}: no target PNG for {len(missing)} images, e.g. {missing[0]}.png")
        self.tags = read_tags(base / "conditions.json")
        self.images, self.target_dir, self.task = images, target_dir, task
        self.cfg, self.size = cfg, tuple(image_size)
        self.classes = tuple(cfg.class_names) or tuple(str(i) for i in range(cfg.num_classes))

    def __len__(self) -> int:
        return len(self.images)

    @property
    def targets(self) -> tuple[str, ...]:
        """The one target of the set: ``label`` (segmentation) or ``depth``."""
        return ("label",) if self.task == "seg" else ("depth",)

    def view_counts(self) -> np.ndarray:
        """``(len(self),)`` int64: one view per image."""
        return np.ones(len(self.images), dtype=np.int64)

    @property
    def tag_vocabulary(self) -> tuple[str, ...]:
        """The tags of the set's images (:func:`ordered_tags` order): what its store records and its
        results are grouped by."""
        return ordered_tags(tag for p in self.images for tag in self.tags.get(p.stem, ()))

    def __getitem__(self, index: int) -> list[ProbeView]:
        path = self.images[index]
        image, _ = load_image(path, self.size, np.eye(3), np.random.default_rng(0))
        target = load_target_png(self.target_dir / f"{path.stem}.png", self.size)
        tags = ordered_tags(self.tags.get(path.stem, ()))
        if self.task == "seg":
            label = torch.from_numpy(target.astype(np.int64))
            label = torch.where(label == self.cfg.ignore_index, IGNORE, label)
            if (label[label != IGNORE] >= self.cfg.num_classes).any():
                raise ProbeError(f"{self.target_dir / path.stem}.png: label >= folder.num_classes "
                                 f"({self.cfg.num_classes})")
            return [ProbeView(image, label.to(torch.uint8), None, tags, path.stem)]
        depth = torch.from_numpy(target.astype(np.float32) / self.cfg.depth_scale)
        return [ProbeView(image, None, depth, tags, path.stem)]


def read_tags(path: Path) -> dict[str, list[str]]:
    """A folder set's ``conditions.json`` (image stem -> list of tags; ``{}`` when there is none).

    Raises:
        ProbeError: not JSON, not an object of string lists, an empty tag, ``all``, or more than
            :data:`MAX_TAGS` distinct tags; one line naming the file.
    """
    if not path.is_file():
        return {}
    try:
        tags = json.loads(path.read_text())
    except ValueError as exc:
        raise ProbeError(f"{path}: not JSON ({exc}); write {{\"<image stem>\": [\"<tag>\", ...]}}") from None
    if not isinstance(tags, dict) or not all(isinstance(v, list) and all(isinstance(t, str) and t for t in v)
                                             for v in tags.values()):
        raise ProbeError(f"{path}: must map each image stem to a list of non-empty tag strings, "
                         f'e.g. {{"im0": ["night", "tunnel"]}}')
    vocabulary = {t for v in tags.values() for t in v}
    if ALL in vocabulary or len(vocabulary) > MAX_TAGS:
        raise ProbeError(f"{path}: {len(vocabulary)} distinct tags{' with ' + repr(ALL) if ALL in vocabulary else ''}"
                         f"; at most {MAX_TAGS}, and {ALL!r} is the group of every view, not a tag")
    return tags


def load_target_png(path: Path, out_size: tuple[int, int]) -> np.ndarray:
    """A label/depth PNG resized (nearest) to cover ``out_size`` and centre-cropped, as ``load_image``
    does to the image it belongs to. Returns ``(H, W)`` in the file's integer dtype."""
    out_h, out_w = out_size
    with Image.open(path) as im:
        src_w, src_h = im.size
        scale = max(out_w / src_w, out_h / src_h)
        new_w, new_h = max(out_w, round(src_w * scale)), max(out_h, round(src_h * scale))
        arr = np.asarray(im.resize((new_w, new_h), Image.NEAREST))
    left, top = (new_w - out_w) // 2, (new_h - out_h) // 2
    return arr[top:top + out_h, left:left + out_w].copy()
