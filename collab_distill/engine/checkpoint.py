"""Full-state checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder ``<run>/checkpoints/step_<N>/`` holding

* ``model.safetensors``: the trainable modules' state (parameters and buffers), all finite;
* ``optimizer.safetensors`` + the optimiser's param groups in ``state.json``;
* ``state.json``: step, scheduler, grad scaler, python/numpy RNG and anything the trainer adds;
* ``rng.safetensors``: torch CPU (and CUDA) generator states;
* ``manifest.json``, written last: the size and sha256 of each file above.

It is written to a temporary folder and renamed into place, so a kill never leaves a half checkpoint
under a ``step_<N>`` name. The manifest catches what the rename cannot: a file damaged later (a full
disk, a copy cut short, a truncation). A checkpoint is used only once it matches its manifest
(:func:`verify_checkpoint`); ``--resume auto`` skips a damaged one with a warning naming it and takes
the newest valid one (:func:`load_latest_checkpoint`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from collab_distill.errors import UserError
from collab_distill.models.weights import check_finite_weights, read_safetensors, read_state_dict

log = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step_(\d{8})$")
MANIFEST = "manifest.json"
_FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint folder is missing, incomplete or damaged."""


@dataclass
class Restored:
    """What :func:`load_checkpoint` gives back besides the optimiser, scheduler, scaler and RNG it restores."""

    path: Path
    step: int
    model_state: dict[str, torch.Tensor]   # to load into the trainable modules
    extra: dict[str, Any]                  # the trainer's own values


def _tensors_of_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser state dict into flat tensors and a JSON-able rest."""
    tensors, plain = {}, {}
    for pid, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "non_tensor_state": plain}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, values in meta["non_tensor_state"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    np_state = np.random.get_state()
    py_state = random.getstate()
    return tensors, {"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
                     "python": [py_state[0], list(py_state[1]), py_state[2]]}


def _set_rng_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    n = plain["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    p = plain["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def save_checkpoint(run_dir: Path, step: int, model_state: dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any | None,
                    extra: dict[str, Any], keep_last: int) -> Path:
    """Write ``step_<N>`` atomically under ``run_dir/checkpoints`` and keep the last ``keep_last``
    checkpoints up to it (0: all).

    Raises:
        NonFiniteWeightsError: a parameter or buffer holds a NaN or an infinity (nothing is written).
    """
    check_finite_weights(model_state, f"{run_dir} at step {step}")
    root = Path(run_dir) / "checkpoints"
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()}, tmp / "model.safetensors")
    opt_tensors, opt_meta = _tensors_of_optimizer(optimizer.state_dict())
    save_file(opt_tensors, tmp / "optimizer.safetensors")
    rng_tensors, rng_plain = _rng_state()
    save_file(rng_tensors, tmp / "rng.safetensors")
    state = {"step": step, "optimizer": opt_meta, "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict() if scaler is not None else None, "rng": rng_plain, "extra": extra}
    (tmp / "state.json").write_text(json.dumps(state))
    manifest = {"step": step, "files": {name: {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
                                        for name in _FILES}}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    if final.exists():  # a checkpoint of an abandoned continuation: moved aside, so a kill leaves one of the two
        aside = root / f".old_step_{step:08d}_{os.getpid()}"
        os.replace(final, aside)
        os.replace(tmp, final)
        shutil.rmtree(aside)
    else:
        os.replace(tmp, final)
    _prune(run_dir, final, keep_last)
    return final


def _prune(run_dir: Path, newest: Path, keep_last: int) -> None:
    """Delete the checkpoints before ``newest`` but its ``keep_last - 1`` predecessors. ``newest``, valid
    by construction, is never deleted; checkpoints after it (another continuation) are left alone."""
    if keep_last <= 0:
        return
    older = [path for path in list_checkpoints(run_dir) if path.name < newest.name]  # zero-padded: by step
    for old in older[:max(0, len(older) - (keep_last - 1))]:
        shutil.rmtree(old, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint folders (``step_<N>``) of a run, oldest first, valid or not."""
    root = Path(run_dir) / "checkpoints"
    return [path for path in sorted(root.glob("step_*")) if _STEP_DIR.match(path.name)] if root.is_dir() else []


def verify_checkpoint(path: Path) -> None:
    """Check that ``path`` holds every checkpoint file with the size and sha256 its manifest records.

    Raises:
        CheckpointError: the folder or its manifest is missing, or a file is missing, truncated or changed.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {path} (pass --resume auto or a "
                              "<run>/checkpoints/step_<N> folder)")
    try:
        files = json.loads((path / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no {MANIFEST}, so not a complete checkpoint (interrupted, written by an "
                              "older version, or not a <run>/checkpoints/step_<N> folder)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path / MANIFEST}: unreadable ({exc}); the checkpoint is damaged") from None
    for name in _FILES:
        file = path / name
        if name not in files:
            raise CheckpointError(f"{path / MANIFEST}: does not list {name}; the checkpoint is damaged")
        if not file.is_file():
            raise CheckpointError(f"{file}: missing; the checkpoint is damaged")
        size = file.stat().st_size
        if size != files[name]["bytes"]:
            raise CheckpointError(f"{file}: {size} bytes, {files[name]['bytes']} when saved (truncated or "
                                  "changed); the checkpoint is damaged")
        if _sha256(file) != files[name]["sha256"]:
            raise CheckpointError(f"{file}: sha256 differs from the one saved; the checkpoint is damaged")


def load_checkpoint(path: Path, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any | None) -> Restored:
    """Verify the checkpoint at ``path``, then restore optimiser, scheduler, scaler and RNG in place.

    Nothing is restored when it raises.

    Raises:
        CheckpointError: missing or damaged checkpoint (:func:`verify_checkpoint`).
        WeightsError: the model state holds a NaN or an infinity.
    """
    path = Path(path)
    verify_checkpoint(path)
    model_state = read_state_dict(path / "model.safetensors")[0]
    optimizer_tensors = read_safetensors(path / "optimizer.safetensors")[0]
    rng_tensors = read_safetensors(path / "rng.safetensors")[0]
    state = json.loads((path / "state.json").read_text())
    optimizer.load_state_dict(_optimizer_state(optimizer_tensors, state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    _set_rng_state(rng_tensors, state["rng"])
    return Restored(path, int(state["step"]), model_state, state["extra"])


def load_latest_checkpoint(run_dir: Path, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any | None
                           ) -> Restored | None:
    """:func:`load_checkpoint` of the newest valid checkpoint of ``run_dir``; a damaged one is skipped
    with a warning that names it. None when the run has no checkpoint.

    Raises:
        CheckpointError: the run has checkpoints but none is valid.
    """
    found = list_checkpoints(run_dir)
    for path in reversed(found):
        try:
            return load_checkpoint(path, optimizer, scheduler, scaler)
        except CheckpointError as exc:
            log.warning("skipping a damaged checkpoint: %s", exc)
    if found:
        raise CheckpointError(f"{Path(run_dir) / 'checkpoints'}: none of its {len(found)} checkpoints is valid "
                              "(see the warnings above); pass --overwrite to train again from the start")
    return None
