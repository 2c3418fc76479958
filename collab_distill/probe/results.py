"""The probe result file (``<output_dir>/<name>/<task>.json``): schema, writing, reading.

Top-level keys (``schema`` = :data:`RESULT_SCHEMA`)::

    name          the method / run label (report rows)
    task          "seg" | "depth" | "lidar_seg" (the 3D probe; per group "samples" instead of "images")
    protocol      "linear" | "linear+ms" | "lin.1" | "lin.4" | "custom"
    encoder       {"weights", "format", "architecture", "sha256"?}   the probed encoder
    teacher       the same for model.image.weights (the fidelity reference)
    recipe        everything needed to reproduce the numbers (image_size, blocks, norm, iterations,
                  batch_size, lr, seeds, splits, images, ...)
    classes       seg: class names, in label order
    results       {group: metrics} on the evaluation views, for group in the evaluation store's tag
                  vocabulary, then all: nuScenes format clear, night, rain, fog, snow, all; a folder set
                  the tags of its conditions.json (the condition tags first, then the others sorted)
    corruptions   {corruption: {group: metrics}}: the same head on the evaluation views under each
                  unseen corruption of eval.corruptions (recipe: corruptions, corruption_severity,
                  corruption_max_samples, corruption_images; seeded by recipe seed and each view's
                  number), and "clean": on the same views uncorrupted; absent when there is none
    train_results {"all": metrics} on the training views, at most eval.train_views of them (did the head fit?)
    fidelity      {group: {"images", "patch_cosine", "cls_cosine"}} (when computed)
    log           {"loss_first", "loss_last", "seconds_features", "seconds_train", "seconds_total",
                   "seconds_corruptions" (the corrupted stores found or built, and their evaluations)}
    showcase      file name of the showcase tensors (or absent)
    config        the resolved ProbeConfig
    git_sha, time_utc, command

Metrics per group: ``images`` (0: the tag is absent and every value is null), ``pixels``; seg:
``miou``, ``accuracy`` (fractions in [0, 1]), ``iou`` {class: value or null}; depth: ``rmse`` (m),
``abs_rel``, ``delta1``, ``delta2``, ``delta3``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from collab_distill.errors import UserError

RESULT_SCHEMA = "collab_distill.probe/1"
CLEAN = "clean"  # in a result's corruptions: the corrupted views' samples, uncorrupted (the reference)
TASKS = ("seg", "depth", "lidar_seg")  # lidar_seg: the 3D probe (collab_distill/probe/lidar.py)


class ResultError(UserError, ValueError):
    """A file that is not a probe result this code can read."""


def write_result(result: dict[str, Any], path: str | Path) -> Path:
    """Write ``result`` (with ``schema`` set) as indented JSON; NaN is refused."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"schema": RESULT_SCHEMA, **result}, indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def load_result(path: str | Path) -> dict[str, Any]:
    """Read and check a result file.

    Raises:
        ResultError: not JSON, another schema, or a missing key.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # ValueError: not JSON, not text (e.g. a half-written file)
        raise ResultError(f"{path}: cannot read a probe result ({exc}); run the probe that wrote it again, "
                          f"or move the file out of the report's inputs") from None
    if not isinstance(data, dict) or data.get("schema") != RESULT_SCHEMA:
        raise ResultError(f"{path}: schema {data.get('schema') if isinstance(data, dict) else None!r}, "
                          f"expected {RESULT_SCHEMA!r}")
    missing = [k for k in ("name", "task", "recipe", "results") if k not in data]
    if missing or data["task"] not in TASKS:
        raise ResultError(f"{path}: missing {missing} or unknown task {data.get('task')!r}")
    data["path"] = str(path)
    return data


def finite_or_none(value: float | None) -> float | None:
    """``None`` for None/NaN, else the float."""
    return None if value is None or math.isnan(value) else float(value)
