"""Which probe feature store a probe run reads: its identity from the config, where it lives, and
opening it (built once by :func:`~collab_distill.probe.store_build.build_probe_store` when missing).

A store is identified by what its rows hold (:func:`store_identity`): the encoder (weights sha256 or
``random`` + seed, architecture, image size, blocks) and the views (info-store fingerprint or folder
files, split, conditions, cameras, the ``max_samples`` selection, ground-truth settings). Not in it:
the final norm, the CLS choice and the head, so the seg probe, the depth probe and every recipe on the
same blocks share one store. The evaluation views under an unseen corruption (``eval.corruptions``) are
a store of their own, whose views identity also names the corruption, its severity and seed.
It lives in ``<store.dir>/<sha256 of the identity>`` (``store.dir``
defaults to ``<experiment.output_dir>/stores``), or at ``store.train`` / ``store.eval`` when given,
which must have that identity.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from collab_distill.data.corruptions import Corruption
from collab_distill.data.feature_store import info_fingerprint
from collab_distill.data.info_store import InfoStore, store_path
from collab_distill.models.config import WEIGHTS_RANDOM
from collab_distill.probe.config import ProbeConfig
from collab_distill.probe.encoder import describe_weights
from collab_distill.probe.store import ProbeStore, identity_hash
from collab_distill.probe.store_build import build_probe_store, view_counts


def select_items(count: int, max_samples: int, seed: int) -> Sequence[int]:
    """The dataset items a probe uses: all of ``count``, or (``max_samples > 0``) a seeded subset, in order."""
    if max_samples <= 0 or max_samples >= count:
        return range(count)
    return sorted(torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:max_samples].tolist())


def corruption_views(cfg: ProbeConfig, views: Dataset) -> list[int]:
    """The evaluation store's view numbers of the samples the corruption rows use
    (``eval.corruption_max_samples``): the views of the corrupted stores, in the same order."""
    items = select_items(len(views), cfg.eval.corruption_max_samples, cfg.experiment.seed)
    offsets = np.concatenate([[0], np.cumsum(view_counts(views, range(len(views))))])
    return [v for i in items for v in range(int(offsets[i]), int(offsets[i + 1]))]


def encoder_identity(cfg: ProbeConfig, weights: str) -> dict[str, Any]:
    """What identifies the features of the probed ``weights``: file sha256 (or ``random`` + seed, ``hub``),
    architecture and its options, image size and blocks."""
    described = describe_weights(weights, cfg.model.image)
    image = dataclasses.asdict(cfg.model.image)
    return {"weights": described.get("sha256", weights), "format": described["format"],
            "seed": cfg.experiment.seed if weights == WEIGHTS_RANDOM else None, "architecture": image["name"],
            "model_kwargs": image["model_kwargs"], "image_size": list(cfg.data.image_size),
            "blocks": list(cfg.head.blocks)}


def sample_limit(cfg: ProbeConfig, train: bool, corrupted: bool = False) -> int:
    """The ``max_samples`` of a store (0: every sample): ``train.max_samples`` for the training views,
    ``eval.corruption_max_samples`` for the evaluation views under a corruption, else 0."""
    if train:
        return cfg.train.max_samples
    return cfg.eval.corruption_max_samples if corrupted else 0


def views_identity(cfg: ProbeConfig, train: bool, max_samples: int = 0) -> dict[str, Any]:
    """What identifies the training (``train``) or evaluation views of ``cfg`` (a seeded subset of
    ``max_samples`` samples when > 0)."""
    split = cfg.data.split if train else cfg.eval.split
    selection = {"split": split, "max_samples": max_samples, "selection_seed": cfg.experiment.seed if max_samples else 0}
    if cfg.folder.root:
        return {"kind": "folder", **selection, **_folder_fingerprint(Path(cfg.folder.root) / split, cfg.task),
                "folder": dataclasses.asdict(cfg.folder)}
    conditions = cfg.data.conditions if train else cfg.eval.conditions
    info = InfoStore(store_path(cfg.data.info_dir, split), cfg.data.dataroot or None)
    return {"kind": "nuscenes", **selection, **info_fingerprint(info), "conditions": list(conditions),
            "cameras": list(cfg.data.cameras), "camera_seed": cfg.experiment.seed if "random" in cfg.data.cameras else 0,
            "min_depth": cfg.data.min_depth, "zbuffer_cell": cfg.data.zbuffer_cell, "nsweeps": cfg.data.nsweeps,
            "drop_noise_depth": cfg.gt.drop_noise_depth}


def _folder_fingerprint(base: Path, task: str) -> dict[str, Any]:
    """sha256 over the names, sizes and modification times of a folder set's images, targets and tags."""
    digest = hashlib.sha256()
    for sub in ("images", "labels" if task == "seg" else "depth"):
        for path in sorted((base / sub).glob("*")):
            stat = path.stat()
            digest.update(f"{sub}/{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    tags = base / "conditions.json"
    digest.update(tags.read_bytes() if tags.is_file() else b"")
    return {"root": str(base.resolve()), "task": task, "files_sha256": digest.hexdigest()}


def eval_corruptions(cfg: ProbeConfig) -> list[Corruption]:
    """The unseen corruptions of ``cfg`` (``eval.corruptions`` at ``eval.corruption_severity``, seeded
    by ``experiment.seed``), in config order."""
    return [Corruption(name, cfg.eval.corruption_severity, cfg.experiment.seed) for name in cfg.eval.corruptions]


def store_identity(cfg: ProbeConfig, weights: str, train: bool, corruption: Corruption | None = None) -> dict[str, Any]:
    """The identity of the store of ``cfg``'s training or evaluation views (under ``corruption``)."""
    views = views_identity(cfg, train, sample_limit(cfg, train, corruption is not None))
    if corruption is not None:
        views["corruption"] = corruption.identity()
    return {"encoder": encoder_identity(cfg, weights), "views": views}


def store_location(cfg: ProbeConfig, identity: dict[str, Any], train: bool, explicit_ok: bool = True) -> Path:
    """``store.train`` / ``store.eval`` when set (and ``explicit_ok``), else ``<store.dir>/<identity sha256>``."""
    explicit = (cfg.store.train if train else cfg.store.eval) if explicit_ok else ""
    if explicit:
        return Path(explicit)
    root = Path(cfg.store.dir) if cfg.store.dir else Path(cfg.experiment.output_dir) / "stores"
    return root / identity_hash(identity)


def probe_store(cfg: ProbeConfig, weights: str, train: bool, views: Dataset,
                encoder: Callable[[], torch.nn.Module], progress: bool = True, overwrite: bool = False,
                corruption: Corruption | None = None) -> ProbeStore:
    """The store of ``cfg``'s training or evaluation ``views`` (the evaluation views under ``corruption``:
    always under ``store.dir``): the one found at its location (its identity checked), else built there
    with ``encoder()`` (called only then). With ``overwrite``, a store there that cannot be read
    (damaged, incomplete, of another version) or is of another identity is built anew (and replaced
    once the new one is complete).

    Raises:
        ProbeStoreError: without ``overwrite``, a store of another identity at an explicit ``store.train``
            / ``store.eval``, or a store that cannot be read.
    """
    identity = store_identity(cfg, weights, train, corruption)
    path = store_location(cfg, identity, train, explicit_ok=corruption is None)
    store = ProbeStore.reuse(path, identity, overwrite)
    if store is not None:
        return store
    items = select_items(len(views), sample_limit(cfg, train, corruption is not None), cfg.experiment.seed)
    return build_probe_store(encoder(), views, items, identity, path, getattr(views, "targets"),
                             cfg.train.feature_batch, cfg.data.num_workers, progress, overwrite=overwrite,
                             corruption=corruption)
