"""What a user can lose or be misled by in training: a re-run over a finished run, a diverged model,
damaged checkpoints and weight files. Tiny stage-1 runs of a few steps on the synthetic set."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_training import SMALL, _cfg

from collab_distill.config import ConfigError, RunConfig
from collab_distill.data.collate import Collate
from collab_distill.data.dataset import PairedDataset
from collab_distill.engine.checkpoint import CheckpointError, list_checkpoints
from collab_distill.engine.trainer import NonFiniteLossError, TrainResult, train
from collab_distill.errors import UserError
from collab_distill.methods.base import Method
from collab_distill.methods.registry import build_method
from collab_distill.models.weights import WeightsError, read_state_dict

REPO = Path(__file__).resolve().parents[1]
STAGE1 = "configs/stage1/synthetic.yaml"
RUN = ("data.cameras=[all]", "optim.lr=3e-3")


def _train(cfg: RunConfig, resume: str = "", poison_at: int = 0, **kwargs) -> TrainResult:
    """Train stage 1 from ``cfg``; ``poison_at > 0``: after that optimiser step, every BatchNorm
    ``running_var`` of the point encoder becomes inf (a diverged run, deterministically)."""
    torch.manual_seed(cfg.experiment.seed)
    method = build_method(cfg)
    if poison_at:
        _poison_after(method, poison_at)
    dataset = PairedDataset(cfg.data, seed=cfg.experiment.seed)
    return train(method, dataset, Collate(cfg.data.voxel_size), cfg, resume, progress=False, **kwargs)


def _poison_after(method: Method, step: int) -> None:
    calls = []

    def hook() -> None:
        calls.append(1)
        if len(calls) == step:
            for name, buf in method.point_encoder.named_buffers():
                if name.endswith("running_var"):
                    buf.fill_(float("inf"))

    method.after_optimizer_step = hook


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _steps_logged(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def finished_run(synthetic_infos, tmp_path_factory) -> Path:
    """A 4-step stage-1 run with checkpoints at steps 2 and 4 (copy it before changing it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    _train(_cfg(STAGE1, synthetic_infos, out, *RUN, "train.max_steps=4", "train.ckpt_every=2", "train.keep_last=3"))
    assert [p.name for p in list_checkpoints(out)] == ["step_00000002", "step_00000004"]
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def test_a_rerun_is_refused_and_overwrite_replaces_the_run_only_once_finished(synthetic_infos, tmp_path):
    out = tmp_path / "R"
    first = _train(_cfg(STAGE1, synthetic_infos, out, *RUN, "train.max_steps=4"))
    before = _snapshot(out)
    again = _cfg(STAGE1, synthetic_infos, out, *RUN, "train.max_steps=2")
    with pytest.raises(UserError) as refused:
        _train(again)
    message = _one_line(refused)
    assert str(out) in message and "--resume auto" in message and "--overwrite" in message
    assert _snapshot(out) == before
    # a replacement that fails half-way leaves the old run as it was
    with pytest.raises(UserError):
        _train(again, poison_at=1, overwrite=True)
    assert _snapshot(out) == before
    second = _train(again, overwrite=True)
    assert (first.steps, second.steps, second.out_dir) == (4, 2, out)
    assert _steps_logged(out) == [1, 2]
    assert [p.name for p in list_checkpoints(out)] == ["step_00000002"]
    assert _snapshot(out)["weights/point_encoder.safetensors"] != before["weights/point_encoder.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["R"]  # no sibling left behind
    with pytest.raises(UserError, match="pass only one"):
        _train(again, resume="auto", overwrite=True)


def test_b_train_tool_refuses_a_non_empty_folder_in_one_line(synthetic_infos, tmp_path):
    out = tmp_path / "R"
    out.mkdir()
    (out / "metrics.jsonl").write_text("{}\n")
    proc = subprocess.run([sys.executable, "tools/train_stage1.py", f"experiment.output_dir={out}",
                           f"data.info_dir={synthetic_infos}", *SMALL, *RUN, "train.max_steps=1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1",  # the tool runs this checkout's library
                               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(out) in lines[0], proc.stderr
    assert [p.name for p in out.iterdir()] == ["metrics.jsonl"]


def test_c_a_diverged_model_is_never_saved(synthetic_infos, tmp_path):
    cfg = _cfg(STAGE1, synthetic_infos, tmp_path, *RUN, "train.max_steps=4", "train.ckpt_every=2")
    with pytest.raises(UserError) as diverged:
        _train(cfg, poison_at=3)
    message = _one_line(diverged)
    count = sum(name.endswith("running_var") for name, _ in build_method(cfg).point_encoder.named_buffers())
    assert f"{count} parameters/buffers hold NaN or inf" in message and "point_encoder." in message, message
    assert "more)" in message and "optim.lr" in message and "optim.grad_clip" in message
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000002"]  # the one before divergence
    assert not (tmp_path / "weights").exists()


def _poison_file(path: Path) -> str:
    """Set the first floating-point tensor of a safetensors file to NaN; returns its key."""
    state = load_file(path)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, path)
    return key


def test_d_non_finite_or_damaged_weight_files_are_refused_at_load(finished_run, synthetic_infos, tmp_path):
    weights = tmp_path / "weights"
    shutil.copytree(finished_run / "weights", weights)
    key = _poison_file(weights / "head.safetensors")
    stage2 = _cfg("configs/stage2/synthetic.yaml", synthetic_infos, tmp_path / "s2", *RUN,
                  f"method.point_weights={weights}")
    with pytest.raises(WeightsError) as bad:
        build_method(stage2)
    assert str(weights / "head.safetensors") in _one_line(bad) and key in str(bad.value)

    truncated = weights / "point_encoder.safetensors"
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(WeightsError, match=str(truncated)):
        read_state_dict(truncated)

    # a checkpoint whose model state is non-finite (its manifest matching): no resume from it
    out = _copy(finished_run, tmp_path)
    ckpt = out / "checkpoints" / "step_00000004"
    model_key = _poison_file(ckpt / "model.safetensors")
    manifest = json.loads((ckpt / "manifest.json").read_text())
    data = (ckpt / "model.safetensors").read_bytes()
    manifest["files"]["model.safetensors"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    cfg = _cfg(STAGE1, synthetic_infos, out, *RUN, "train.max_steps=6")
    with pytest.raises(WeightsError) as resumed:
        _train(cfg, resume="auto")
    assert str(ckpt / "model.safetensors") in _one_line(resumed) and model_key in str(resumed.value)


@pytest.mark.parametrize("name, damage", [("model.safetensors", "truncate"), ("optimizer.safetensors", "truncate"),
                                          ("state.json", "empty")])
def test_e_resume_auto_skips_a_damaged_checkpoint_by_name(name, damage, finished_run, synthetic_infos, tmp_path,
                                                          caplog):
    out = _copy(finished_run, tmp_path)
    damaged = out / "checkpoints" / "step_00000004" / name
    damaged.write_bytes(damaged.read_bytes()[:40] if damage == "truncate" else b"")
    cfg = _cfg(STAGE1, synthetic_infos, out, *RUN, "train.max_steps=6", "train.ckpt_every=2", "train.keep_last=3")
    with caplog.at_level(logging.WARNING):
        result = _train(cfg, resume="auto")
    assert any(str(damaged) in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING), caplog.text
    assert result.steps == 6
    assert _steps_logged(out) == [1, 2, 3, 4, 5, 6]  # continued from step 2, each step logged once


def test_e_resume_path_to_a_bad_checkpoint_is_one_line(finished_run, synthetic_infos, tmp_path):
    out = _copy(finished_run, tmp_path)
    ckpt = out / "checkpoints" / "step_00000004"
    damaged = ckpt / "optimizer.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:40])
    cfg = _cfg(STAGE1, synthetic_infos, out, *RUN, "train.max_steps=6")
    with pytest.raises(CheckpointError) as bad:
        _train(cfg, resume=str(ckpt))
    assert str(damaged) in _one_line(bad)
    with pytest.raises(CheckpointError) as missing:
        _train(cfg, resume=str(out / "checkpoints" / "step_00000009"))
    assert "step_00000009" in _one_line(missing)
    (ckpt.parent / "step_00000002" / "state.json").write_text("")
    with pytest.raises(CheckpointError, match="none of its 2 checkpoints is valid"):
        _train(cfg, resume="auto")


def test_e_pruning_keeps_the_checkpoint_just_written(finished_run, synthetic_infos, tmp_path):
    """Resumed from step 2 with keep_last=1 while step 4 exists: step 3 is the run's newest checkpoint."""
    out = _copy(finished_run, tmp_path)
    cfg = _cfg(STAGE1, synthetic_infos, out, *RUN, "train.max_steps=3", "train.keep_last=1")
    _train(cfg, resume=str(out / "checkpoints" / "step_00000002"))
    assert [p.name for p in list_checkpoints(out)] == ["step_00000003", "step_00000004"]


def test_f_zero_steps_and_too_many_bad_losses_are_user_errors(synthetic_infos, tmp_path):
    cfg = _cfg(STAGE1, synthetic_infos, tmp_path, *RUN)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=0, epochs=0))
    with pytest.raises(ConfigError) as zero:
        _train(cfg)
    assert "train.max_steps=0" in _one_line(zero) and "train.epochs=0" in str(zero.value)
    assert not (tmp_path / "weights").exists()
    assert issubclass(NonFiniteLossError, UserError)
