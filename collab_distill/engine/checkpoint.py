"""Full-state checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder ``<run>/checkpoints/step_<N>/`` holding

* ``model.safetensors``: the trainable modules' state (parameters and buffers);
* ``optimizer.safetensors`` + the optimiser's param groups in ``state.json``;
* ``state.json``: step, scheduler, grad scaler, python/numpy RNG, anything the trainer adds, and
  ``"complete": true``;
* ``rng.safetensors``: torch CPU (and CUDA) generator states.

It is written to a temporary folder and renamed into place, so a kill never leaves a half checkpoint
that looks valid. ``latest_checkpoint`` returns the newest folder whose ``state.json`` says complete.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

_STEP_DIR = re.compile(r"^step_(\d{8})$")


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
    """Write ``step_<N>`` atomically under ``run_dir/checkpoints`` and keep the last ``keep_last``."""
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
             "scaler": scaler.state_dict() if scaler is not None else None, "rng": rng_plain,
             "extra": extra, "complete": True}
    (tmp / "state.json").write_text(json.dumps(state))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    found = []
    for path in sorted(root.glob("step_*")) if root.is_dir() else []:
        if not _STEP_DIR.match(path.name):
            continue
        try:
            if json.loads((path / "state.json").read_text()).get("complete"):
                found.append(path)
        except (OSError, json.JSONDecodeError):
            continue
    return found


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(path: Path, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any | None
                    ) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]]:
    """Restore optimiser, scheduler, scaler and RNG in place.

    Returns:
        (step, model state dict to load into the trainable modules, the trainer's ``extra`` dict).
    """
    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    if not state.get("complete"):
        raise ValueError(f"{path}: incomplete checkpoint (state.json does not say complete)")
    optimizer.load_state_dict(_optimizer_state(load_file(path / "optimizer.safetensors"), state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    _set_rng_state(load_file(path / "rng.safetensors"), state["rng"])
    return int(state["step"]), load_file(path / "model.safetensors"), state["extra"]
