"""One probe run from a :class:`ProbeConfig`: views -> probe store (frozen features + sparse targets,
built once) -> head streamed from the store -> per-condition metrics (+ the same head on the evaluation
views under each unseen corruption, fidelity, showcase) -> ``<output_dir>/<name>/<task>.json``. What
the probe tools call."""
from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from torch.utils.data import DataLoader, Dataset

from collab_distill.config import config_to_dict, git_revision
from collab_distill.models import ImageEncoder
from collab_distill.paths import refuse_overwrite
from collab_distill.probe.config import ProbeConfig, ProbeError, check_probe_config, protocol_name
from collab_distill.probe.data import FolderViews, NuScenesViews, ProbeView, collate_views
from collab_distill.probe.encoder import describe_weights, load_encoder
from collab_distill.probe.fidelity import feature_fidelity
from collab_distill.probe.metrics import MIOU_CONVENTION
from collab_distill.probe.results import CLEAN, write_result
from collab_distill.probe.showcase import Showcase, select_showcase, to_uint8
from collab_distill.probe.store import FEATURE_DTYPE, ProbeStore, dense_maps
from collab_distill.probe.stores import corruption_views, eval_corruptions, probe_store, select_items
from collab_distill.probe.train import DepthTask, ProbeTask, SegTask, StoreViews, evaluate, train_head

log = logging.getLogger(__name__)
TEACHER_NAME = "teacher"


def encoder_weights(cfg: ProbeConfig) -> str:
    """The probed weights: ``cfg.encoder``, else the teacher's ``model.image.weights``."""
    weights = cfg.encoder or cfg.model.image.weights
    if not weights:
        raise ProbeError("no encoder to probe: set encoder=PATH (or --encoder) or model.image.weights")
    return weights


def probe_name(cfg: ProbeConfig) -> str:
    """``experiment.name``, else ``<run>`` for ``.../<run>/weights/<file>``, ``teacher`` for the
    teacher's weights, else the file stem."""
    if cfg.experiment.name not in ("", "default"):
        return cfg.experiment.name
    weights = encoder_weights(cfg)
    if weights == cfg.model.image.weights:
        return TEACHER_NAME
    path = Path(weights)
    return path.parent.parent.name if path.parent.name == "weights" and path.parent.parent.name else path.stem


def build_views(cfg: ProbeConfig, train: bool, with_reference: bool = False) -> Dataset:
    """The training (``data.split``/``data.conditions``) or evaluation (``eval``) views."""
    if cfg.folder.root:
        return FolderViews(cfg.folder, cfg.data.split if train else cfg.eval.split, cfg.task, cfg.data.image_size)
    data = cfg.data if train else dataclasses.replace(cfg.data, split=cfg.eval.split, conditions=cfg.eval.conditions)
    return NuScenesViews(data, cfg.experiment.seed, cfg.gt.drop_noise_depth, with_reference)


def _loader(dataset: Dataset, cfg: ProbeConfig) -> DataLoader:
    return DataLoader(dataset, batch_size=cfg.train.feature_batch, shuffle=False, collate_fn=collate_views,
                      num_workers=cfg.data.num_workers)


def build_task(cfg: ProbeConfig, classes: tuple[str, ...]) -> ProbeTask:
    if cfg.task == "seg":
        return SegTask(cfg.head, classes)
    return DepthTask(cfg.head, cfg.train.gradient_loss_weight)


def run_probe(cfg: ProbeConfig, progress: bool = True, command: list[str] | None = None,
              overwrite: bool = False) -> dict[str, Any]:
    """Run the probe of ``cfg`` and write ``<task>.json``, ``<task>_config.yaml`` and (with
    ``eval.showcase``) ``<task>_showcase.safetensors`` to ``<experiment.output_dir>/<name>/``.

    The features come from the probe stores of the training and evaluation views (found under
    ``store.dir`` or built there once, :mod:`collab_distill.probe.stores`); under ``accelerate launch``
    every process builds its shard of a missing store and only the main process then trains the head
    (the others return ``{}``). An existing ``<task>.json`` is refused
    (:class:`~collab_distill.paths.ExistingOutputError`) unless ``overwrite``, which also rebuilds a store
    that cannot serve the run (damaged, or of another identity at an explicit ``store.train``/``store.eval``).

    Returns:
        the result dict (schema in :mod:`collab_distill.probe.results`).
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    t_start = time.perf_counter()
    check_probe_config(cfg)
    name, weights, size = probe_name(cfg), encoder_weights(cfg), tuple(cfg.data.image_size)
    seed = cfg.experiment.seed
    out_dir = Path(cfg.experiment.output_dir) / name
    refuse_overwrite(out_dir / f"{cfg.task}.json", overwrite)
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    # under accelerate launch on GPUs each process builds its shard on its own GPU
    device = state.device if cfg.device == "cuda" and state.num_processes > 1 else torch.device(cfg.device)

    def raw_encoder() -> ImageEncoder:
        return load_encoder(dataclasses.replace(cfg.model.image, norm=False), weights, size, seed).to(device)

    train_views, eval_views = build_views(cfg, train=True), build_views(cfg, train=False)
    train_store = probe_store(cfg, weights, True, train_views, raw_encoder, progress, overwrite)
    eval_store = probe_store(cfg, weights, False, eval_views, raw_encoder, progress, overwrite)
    t_features = time.perf_counter() - t_start
    corrupt_stores = {c.name: probe_store(cfg, weights, False, eval_views, raw_encoder, progress, overwrite, c)
                      for c in eval_corruptions(cfg)}
    if not state.is_main_process:
        return {}
    t_corruptions = time.perf_counter() - t_start - t_features  # + their evaluation below
    target = "label" if cfg.task == "seg" else "depth"
    for store, split in ((train_store, "training"), (eval_store, "evaluation")):
        if target not in store.targets:
            raise ProbeError(f"the {split} views have no {cfg.task} ground truth (segmentation needs lidarseg "
                             f"labels in the info files; store {store.path})")
    classes = tuple(getattr(eval_views, "classes", ())) if cfg.task == "seg" else ()
    log.info("probe %s (%s) of %s: %d train / %d eval views at %s", cfg.task, protocol_name(cfg), weights,
             len(train_store), len(eval_store), size)

    task = build_task(cfg, classes)
    train_set, eval_set = (StoreViews(s, cfg.head.norm, cfg.head.cls_token) for s in (train_store, eval_store))
    workers = cfg.data.num_workers
    head, train_log = train_head(task, train_set, cfg.train, seed, workers, progress)
    results = evaluate(task, head, eval_set, num_workers=workers, progress=progress)
    fit_views = StoreViews(train_store, cfg.head.norm, cfg.head.cls_token,
                           select_items(len(train_store), cfg.eval.train_views, seed))
    train_results = {"all": evaluate(task, head, fit_views, num_workers=workers, progress=False)["all"]}
    corrupted = {}
    t_corrupt_eval = time.perf_counter()
    if corrupt_stores:  # the clean reference: the corrupted stores' views uncorrupted (all of them: the results)
        subset = corruption_views(cfg, eval_views)
        corrupted[CLEAN] = results if len(subset) == len(eval_store) else evaluate(
            task, head, StoreViews(eval_store, cfg.head.norm, cfg.head.cls_token, subset), num_workers=workers,
            progress=False)
        for corruption, store in corrupt_stores.items():
            corrupted[corruption] = evaluate(task, head, StoreViews(store, cfg.head.norm, cfg.head.cls_token),
                                             num_workers=workers, progress=False)
    t_corruptions += time.perf_counter() - t_corrupt_eval

    result: dict[str, Any] = {
        "name": name, "task": cfg.task, "protocol": protocol_name(cfg),
        "encoder": describe_weights(weights, cfg.model.image),
        "teacher": describe_weights(cfg.model.image.weights, cfg.model.image) if cfg.model.image.weights else None,
        "recipe": recipe(cfg, train_store, eval_store, corrupt_stores), "classes": list(classes),
        "results": results, "train_results": train_results}
    if corrupted:
        result["corruptions"] = corrupted
    if cfg.eval.fidelity or cfg.eval.showcase > 0:
        normed_cfg = dataclasses.replace(cfg.model.image, norm=True, blocks=[-1])
        normed = load_encoder(normed_cfg, weights, size, seed).to(device)
        with_reference = build_views(cfg, train=False, with_reference=True)
        if cfg.eval.fidelity and not cfg.folder.root:
            teacher = load_encoder(normed_cfg, cfg.model.image.weights, size, seed).to(device)
            result["fidelity"] = feature_fidelity(normed, teacher, _loader(with_reference, cfg), progress)
        if cfg.eval.showcase > 0:
            showcase = build_showcase(cfg, task, head, eval_set, with_reference, normed, classes)
            result["showcase"] = showcase.save(out_dir / f"{cfg.task}_showcase.safetensors").name
    result["log"] = {**train_log, "seconds_features": t_features, "seconds_corruptions": t_corruptions,
                     "seconds_total": time.perf_counter() - t_start}
    result.update(config=config_to_dict(cfg), git_sha=git_revision(),
                  time_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), command=command or [])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{cfg.task}_config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    write_result(result, out_dir / f"{cfg.task}.json")
    return result


def recipe(cfg: ProbeConfig, train_store: ProbeStore, eval_store: ProbeStore,
           corrupt_stores: dict[str, ProbeStore] | None = None) -> dict[str, Any]:
    """The probe recipe, flat: what someone needs to reproduce the numbers (and the stores it read:
    ``train``, ``eval`` and ``eval:<corruption>``)."""
    stores = {"train": train_store, "eval": eval_store, **{f"eval:{n}": s for n, s in (corrupt_stores or {}).items()}}
    h, t = cfg.head, cfg.train
    out = {
        "protocol": protocol_name(cfg), "image_size": list(cfg.data.image_size),
        "resize": "cover + centre crop, no padding", "blocks": list(h.blocks), "final_norm": h.norm,
        "cls_token": h.cls_token, "upsample": h.upsample, "batch_norm": h.batch_norm,
        "iterations": t.iterations, "batch_size": t.batch_size, "lr": t.lr, "weight_decay": t.weight_decay,
        "optimizer": "AdamW", "schedule": f"linear warm-up {t.warmup} it, cosine to 0",
        "seed": cfg.experiment.seed, "augmentation": "none (features precomputed once)",
        "feature_dtype": FEATURE_DTYPE.name, "tta": "none",
        "features": "float16 tokens before the final norm, in a probe store; the final LayerNorm (head.norm) "
                    "applied when the head reads them",
        "targets": "sparse: the pixels holding a LiDAR point or a label (flat y*W+x), read from the store",
        "store": {split: {"path": str(store.path), "meta_sha256": store.meta_sha256}
                  for split, store in stores.items()},
        "data": cfg.folder.root or cfg.data.info_dir, "train_split": cfg.data.split,
        "train_conditions": list(cfg.data.conditions), "cameras": list(cfg.data.cameras),
        "eval_split": cfg.eval.split, "eval_conditions": list(cfg.eval.conditions),
        "train_images": len(train_store), "eval_images": len(eval_store), "max_samples": t.max_samples,
        "corruptions": list(cfg.eval.corruptions), "corruption_severity": cfg.eval.corruption_severity,
        "corruption_max_samples": cfg.eval.corruption_max_samples,
        "train_results_images": len(select_items(len(train_store), cfg.eval.train_views, cfg.experiment.seed)),
        "corruption_images": len(next(iter(corrupt_stores.values()))) if corrupt_stores else 0}
    if cfg.task == "seg":
        out.update(loss="cross-entropy at labelled pixels of the bilinearly upsampled logits", miou=MIOU_CONVENTION)
    else:
        out.update(loss=f"SigLoss + {t.gradient_loss_weight} x gradient loss", num_bins=h.num_bins,
                   bins="uniform", min_depth=h.min_depth, max_depth=h.max_depth,
                   bin_normalisation="linear (ReLU + 0.1, sum to 1)")
    if not cfg.folder.root:
        out.update(ground_truth="projected LiDAR, nearest point per pixel", min_depth_points=cfg.data.min_depth,
                   zbuffer_cell=cfg.data.zbuffer_cell, drop_noise_depth=cfg.gt.drop_noise_depth)
    return out


@torch.no_grad()
def build_showcase(cfg: ProbeConfig, task: ProbeTask, head: torch.nn.Module, store_views: StoreViews, views: Dataset,
                   encoder: ImageEncoder, classes: tuple[str, ...]) -> Showcase:
    """The showcase views of the evaluation store (chosen by :func:`select_showcase`) with dense
    predictions, dense targets made from the sparse ones, and the encoder's features."""
    store = store_views.store
    index = select_showcase(StoreColumn(store.name, len(store)), StoreColumn(store.tags, len(store)),
                            cfg.eval.showcase)
    names, tags = [store.name(i) for i in index], [store.tags(i) for i in index]
    by_name: dict[str, ProbeView] = {}
    for item in _items_with(views, set(names)):
        by_name.update({v.name: v for v in views[item] if v.name in names})
    shown = [by_name[n] for n in names]
    images = torch.stack([v.image for v in shown])
    has_ref = torch.tensor([v.reference is not None for v in shown])
    refs = torch.stack([v.reference if v.reference is not None else torch.zeros_like(v.image) for v in shown])
    batch = store_views.collate([store_views[i] for i in index])
    dense = [dense_maps(*store.targets_of(i), store.image_size) for i in index]
    target = torch.stack([label if cfg.task == "seg" else depth for label, depth in dense])
    device = encoder.mean.device
    features, ref_features = (encoder(x.to(device)).patch[0].to("cpu", torch.float16) for x in (images, refs))
    return Showcase(cfg.task, names, tags, list(classes), to_uint8(images), to_uint8(refs), has_ref, features,
                    ref_features, task.predict(head, batch.features, store.image_size), target)


class StoreColumn(Sequence):
    """A per-view value of a store as a read-only sequence, read on access (nothing kept)."""

    def __init__(self, read: Callable[[int], Any], length: int) -> None:
        self.read, self.length = read, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:  # type: ignore[override]
        return self.read(index)


def _items_with(views: Dataset, names: set[str]) -> list[int]:
    """Dataset items holding any of ``names`` (view names start with the item's token or stem)."""
    keys = {n.split("/")[0] for n in names}
    if isinstance(views, NuScenesViews):
        return [i for i, s in enumerate(views.pairs.samples) if s.token in keys]
    return [i for i, p in enumerate(views.images) if p.stem in keys]
