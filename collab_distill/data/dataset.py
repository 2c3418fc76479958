"""The paired point-pixel dataset over info files (never the devkit at train time).

One item is one keyframe: its LiDAR points, the selected camera images resized/cropped to the
configured size, the matching ``K`` and ``lidar2cam``, the point-pixel pairs, lidarseg labels when
present, and condition tags. Randomness comes from generators seeded by ``(seed, epoch, index)``
(camera choice, image augmentation) and ``(seed, epoch, index, 1)`` (3D augmentation, subsampling),
so an item is reproducible whatever the worker, and its points are the same with or without images.

In store mode (``teacher_store``, stage 1 with a teacher-feature store) no image is opened: an item
carries the teacher's stored patch maps of its cameras instead, with the ``K`` they were computed at
(:mod:`collab_distill.data.feature_store`); the 3D augmentation applies as usual.

Point and label files of prepared samples are read by :func:`load_points` and :func:`load_labels`
alone (the training dataset, the probes and the prepare check), against the point count of the info
record: a file truncated or replaced after prepare is a :class:`DataFileError` naming it, never a
silent run on fewer points.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from collab_distill.config import ConfigError, DataConfig, ImageAug, PointAug
from collab_distill.data.conditions import CONDITION_TAGS
from collab_distill.data.feature_store import FeatureStore
from collab_distill.data.info_store import InfoSelection, InfoStore, store_path
from collab_distill.data.infos import CAMERA_ORDER, InfoFileError, SampleInfo
from collab_distill.data.sweeps import aggregate_sweeps, sweep_labels
from collab_distill.data.transforms import augment_points, load_image, reindex_pairs, subsample
from collab_distill.geometry import project_to_pairs

POINT_COLUMNS = 5          # x, y, z, intensity, ring in a nuScenes .pcd.bin
INTENSITY_SCALE = 255.0    # nuScenes intensities are 0..255


class DataFileError(InfoFileError):
    """A point or label file that no longer matches its info record: it changed after prepare (so the
    info file no longer describes the data, and tools treat it as any unusable info file)."""


def _read_exactly(path: Path, dtype: type, columns: int, expected: int, what: str) -> np.ndarray:
    """``(expected, columns)`` array of ``dtype`` from a raw binary file.

    Raises:
        DataFileError: the file is unreadable or holds another number of records than ``expected``
            (a file truncated or replaced after prepare would otherwise be used silently).
    """
    redo = "the file changed after prepare: re-run tools/prepare_nuscenes.py (with --overwrite)"
    try:
        raw = np.fromfile(path, dtype=dtype)
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read the {what} ({exc.strerror or exc}); {redo}") from None
    if raw.size != expected * columns:
        raise DataFileError(f"{path}: {path.stat().st_size} bytes hold {raw.size // columns} {what}, its info record "
                            f"says {expected}; {redo}")
    return raw.reshape(expected, columns)


def load_points(path: Path, num_points: int) -> torch.Tensor:
    """``(N, 4)`` float32 x, y, z, intensity/255 from a nuScenes ``.pcd.bin`` of ``num_points`` points
    (the count in its info record; :class:`DataFileError` on any other)."""
    raw = _read_exactly(path, np.float32, POINT_COLUMNS, num_points, "points")[:, :4].copy()
    raw[:, 3] /= INTENSITY_SCALE
    return torch.from_numpy(raw)


def load_labels(path: Path, num_points: int) -> torch.Tensor:
    """``(N,)`` int64 lidarseg indices from a ``.bin`` of one uint8 per point (``num_points`` of them,
    as in the info record; :class:`DataFileError` on any other count)."""
    return torch.from_numpy(_read_exactly(path, np.uint8, 1, num_points, "labels")[:, 0].astype(np.int64))


def conditions_multi_hot(tags: tuple[str, ...]) -> torch.Tensor:
    """``(len(CONDITION_TAGS),)`` bool; unknown tags are ignored."""
    return torch.tensor([t in tags for t in CONDITION_TAGS])


class PairedDataset(Dataset):
    """Keyframes of one split with point-pixel pairs.

    The split's records come from its info store (``<info_dir>/infos_<split>/``, read row by row with ``os.pread``):
    ``samples`` is a sequence of :class:`SampleInfo` built on access that holds only the indices of
    the selected samples, so a dataset costs O(1) memory per process and pickles small (a
    DataLoader worker started with ``spawn`` maps the store again by path).

    Args:
        cfg: the ``data`` section of the run config (info_dir, split, conditions, cameras, ...).
        seed: base seed of all randomness.
        train: apply the configured augmentation (and random crops); otherwise deterministic.
        teacher_store: a teacher-feature store folder: items carry ``teacher_maps`` read from it
            instead of ``images`` (stage 1's ``method.teacher_store``); "" loads the images.
        with_points: load the LiDAR points and pair them with pixels; False (the methods whose
            ``needs_points`` is False) opens no point or label file: items carry the images alone.
        with_images: load the selected cameras; False (the 3D probe without its agreement metric)
            opens no image or stored map: an item has no camera (``images (0, 3, H, W)``, ``K (0, 3, 3)``,
            ``lidar2cam (0, 4, 4)``, no pair), only its points, labels and conditions.

    Raises:
        ConfigError: image augmentation with a store (the store holds the maps of the centre crop).
        FeatureStoreError: the store is incomplete, of another image size or info store, or lacks a
            selected sample.
    """

    def __init__(self, cfg: DataConfig, seed: int = 0, train: bool = True, teacher_store: str | Path = "",
                 with_points: bool = True, with_images: bool = True) -> None:
        store = InfoStore(store_path(cfg.info_dir, cfg.split), cfg.dataroot or None)
        self.root = store.dataroot
        self.samples = InfoSelection(store, cfg.conditions)
        if not self.samples:
            raise ValueError(f"{store.path}: no sample has a condition in {cfg.conditions} (the store has "
                             f"{list(store.present_conditions())})")
        self.cfg = cfg
        self.seed = seed
        self.train = train
        self.with_points = with_points
        self.with_images = with_images
        self.image_dtype = torch.uint8 if cfg.image_dtype == "uint8" else torch.float32
        self.epoch = 0
        self.augment = train and cfg.augment
        self.image_aug = cfg.image_aug if self.augment else ImageAug()
        self.point_aug = cfg.point_aug if self.augment else PointAug()
        self.slot_of = {name: s for s, name in enumerate(store.cameras)}
        self.features: FeatureStore | None = None
        if teacher_store:
            if self.image_aug != ImageAug():
                raise ConfigError(f"data.image_aug={self.image_aug} with method.teacher_store={teacher_store}: the "
                                  "store holds the teacher's maps of the centre crop; turn image augmentation off "
                                  "(data.image_aug.scale_range=[1,1] data.image_aug.hflip_prob=0 "
                                  "data.image_aug.random_crop=false; data.point_aug still applies) or set "
                                  "method.teacher_store=''")
            self.features = FeatureStore(teacher_store)
            self.features.check_data(cfg.image_size, store, self.samples.indices)

    def set_epoch(self, epoch: int) -> None:
        """Change the random stream (camera choice, augmentation) for a new epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def cameras_of(self, info: SampleInfo, rng: np.random.Generator) -> list[str]:
        """The camera channels to load for ``info`` under the ``cameras`` setting."""
        available = [c for c in CAMERA_ORDER if c in info.cameras] + \
            sorted(c for c in info.cameras if c not in CAMERA_ORDER)
        wanted = self.cfg.cameras
        if wanted == ["random"]:
            return [available[int(rng.integers(len(available)))]]
        if wanted == ["all"]:
            return available
        missing = [c for c in wanted if c not in info.cameras]
        if missing:
            raise KeyError(f"sample {info.token} has no camera {missing} (it has {available})")
        return list(wanted)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """One keyframe; ``key`` is an index, or ``(index, epoch)`` as the trainer's sampler gives it.

        Returns:
            dict with ``points (N, 5)`` (x, y, z, intensity, time lag Δt in s: the keyframe's rows first,
            then its ``data.nsweeps - 1`` previous sweeps, :mod:`collab_distill.data.sweeps`), ``labels (N,)``
            int64 lidarseg indices (``IGNORE`` on sweep rows) or None, ``images (M, 3, H, W)`` float in
            [0, 1] (uint8 0..255 with ``data.image_dtype=uint8``) or, in store mode, ``teacher_maps (M, D, h, w)``
            float16, ``K (M, 3, 3)``, ``lidar2cam (M, 4, 4)``,
            ``pair_point (P,)``, ``pair_image (P,)`` (camera index within the sample), ``pair_uv (P, 2)``,
            ``pair_depth (P,)``, ``conditions (5,)`` multi-hot (CONDITION_TAGS), ``cameras``, ``token``,
            ``epoch``; without points (``with_points=False``) no ``points``, ``labels`` or ``pair_*``;
            without images (``with_images=False``) no camera: ``M = 0``, ``P = 0``.
        """
        index, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        info = self.samples[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        channels = self.cameras_of(info, rng) if self.with_images else []
        if not channels:   # with_images=False: no camera, so no image, K or pair
            k_all = np.zeros((0, 3, 3))
            views = {"images": torch.zeros((0, 3, *self.cfg.image_size), dtype=self.image_dtype)}
        elif self.features is None:
            loaded = [load_image(self.root / info.cameras[c].path, self.cfg.image_size, info.cameras[c].K, rng,
                                 self.image_aug, self.image_dtype) for c in channels]
            k_all = np.stack([k for _, k in loaded])
            views = {"images": torch.stack([image for image, _ in loaded])}
        else:
            sample, slots = int(self.samples.indices[index]), [self.slot_of[c] for c in channels]
            k_all = self.features.intrinsics(sample, slots)
            views = {"teacher_maps": torch.from_numpy(self.features.maps(sample, slots))}
        lidar2cam = np.stack([info.cameras[c].lidar2cam for c in channels]) if channels else np.zeros((0, 4, 4))
        item = {**views, "K": torch.from_numpy(k_all).float(), "lidar2cam": torch.from_numpy(lidar2cam).float(),
                "conditions": conditions_multi_hot(info.conditions), "cameras": channels, "token": info.token,
                "epoch": epoch}
        return {**item, **self._points(info, index, epoch, lidar2cam, k_all)} if self.with_points else item

    def _points(self, info: SampleInfo, index: int, epoch: int, lidar2cam: np.ndarray, k_all: np.ndarray
                ) -> dict[str, Any]:
        """The ``points``, ``labels`` and ``pair_*`` of an item (see :meth:`__getitem__`) from its cameras'
        ``lidar2cam (M, 4, 4)`` and ``K (M, 3, 3)``."""
        point_rng = np.random.default_rng([self.seed, epoch, index, 1])  # the points' own stream
        points, keyframe = aggregate_sweeps(self.root, info, self.cfg.nsweeps)  # keyframe rows first
        labels = sweep_labels(load_labels(self.root / info.lidarseg_path, info.num_points), len(points)) \
            if info.lidarseg_path else None
        pairs = project_to_pairs(points[:keyframe], lidar2cam, k_all, self.cfg.image_size,
                                 min_depth=self.cfg.min_depth, zbuffer_cell=self.cfg.zbuffer_cell)
        if self.augment:
            points = augment_points(points, point_rng, self.point_aug)
        kept = subsample(len(points), self.cfg.max_points if self.train else 0, point_rng)
        if kept is not None:
            pairs = reindex_pairs(pairs, kept, len(points))
            points = points[kept]
            labels = labels[kept] if labels is not None else None
        return {"points": points, "labels": labels, "pair_point": pairs.point_idx, "pair_image": pairs.cam_idx,
                "pair_uv": pairs.uv, "pair_depth": pairs.depth}
