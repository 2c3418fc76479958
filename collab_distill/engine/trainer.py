"""One accelerate training loop for every method: CPU, one GPU, many GPUs or nodes (``accelerate launch``).

The config's ``train.batch_size`` is the total batch: each of ``P`` processes reads
``batch_size / (P * grad_accum)`` samples per micro-step (:class:`GlobalBatchSchedule`). Frozen modules
carry no gradient, so DDP neither syncs nor updates them. Checkpoints hold the full state and the
data position is the step, so a resumed run continues exactly where it stopped.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from collab_distill.config import ConfigError, OptimConfig, TrainConfig, save_run_config
from collab_distill.engine.checkpoint import load_checkpoint, load_latest_checkpoint, save_checkpoint
from collab_distill.engine.optim import build_optimizer, build_scheduler
from collab_distill.engine.output import run_folder
from collab_distill.engine.sampler import GlobalBatchSchedule
from collab_distill.errors import UserError
from collab_distill.methods.base import Method
from collab_distill.models.weights import NonFiniteWeightsError, check_finite_weights, nonfinite_names

log = logging.getLogger(__name__)


class NonFiniteLossError(UserError, RuntimeError):
    """Too many steps had a NaN or infinite loss."""


@dataclass
class TrainResult:
    """Where a run ended: steps done, last logged values, skipped steps, output folder."""

    steps: int
    last_logs: dict[str, float]
    nonfinite_steps: int
    out_dir: Path


class _StepBatches:
    """Batch sampler: for steps ``start..total``, the micro-batch indices of one process.

    Yields lists of ``(index, epoch)`` keys (the dataset seeds its randomness with them)."""

    def __init__(self, schedule: GlobalBatchSchedule, start: int, total: int, rank: int) -> None:
        self.schedule, self.start, self.total, self.rank = schedule, start, total, rank

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.total):
            epoch = self.schedule.epoch_of(step)
            for micro in range(self.schedule.accum):
                yield [(i, epoch) for i in self.schedule.indices(step, micro, self.rank)]

    def __len__(self) -> int:
        return (self.total - self.start) * self.schedule.accum


class _RunLog:
    """``metrics.jsonl``, TensorBoard and the progress bar of the main process (no-ops elsewhere).

    On a resume from step ``start``, the records after ``start`` (written by the interrupted run
    after its last checkpoint) are dropped, so each step is logged once."""

    def __init__(self, out_dir: Path, start: int, total: int, main: bool, progress: bool) -> None:
        from tqdm import tqdm

        self.main, self.writer, self.metrics = main, None, None
        if main:
            _drop_metrics_after(out_dir / "metrics.jsonl", start)
            self.writer = _tensorboard(out_dir, purge_step=start + 1)
            self.metrics = (out_dir / "metrics.jsonl").open("a")
        self.bar = tqdm(total=total, initial=start, desc="train", unit="step", disable=not (progress and main))

    def step(self, step: int, logs: dict[str, float], steps_per_s: float) -> None:
        """Write one step's values."""
        self.bar.set_postfix(loss=f"{logs['loss']:.4f}")
        self.metrics.write(json.dumps({"step": step, **logs, "steps_per_s": steps_per_s}) + "\n")
        self.metrics.flush()
        if self.writer is not None:
            for key, value in logs.items():
                self.writer.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.metrics is not None:
            self.metrics.close()


def _drop_metrics_after(path: Path, step: int) -> None:
    """Keep the records of ``metrics.jsonl`` up to ``step`` (and none that a kill cut short); atomic."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


def _tensorboard(out_dir: Path, purge_step: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is pinned in requirements.txt; keep training without it
        log.warning("tensorboard is not installed: logging to metrics.jsonl only")
        return None
    return SummaryWriter(str(out_dir / "tb"), purge_step=purge_step)


def _total_steps(train_cfg: TrainConfig, schedule: GlobalBatchSchedule) -> int:
    """``train.max_steps`` if set, else ``train.epochs`` epochs of whole total batches."""
    total = train_cfg.max_steps or train_cfg.epochs * schedule.steps_per_epoch
    if total <= 0:
        raise ConfigError(f"train.max_steps={train_cfg.max_steps}, train.epochs={train_cfg.epochs}: the run would "
                          f"have {total} steps; set train.max_steps > 0 or train.epochs >= 1")
    return total


def _restore(resume: str, run_dir: Path, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any | None,
             method: Method) -> tuple[int, int]:
    """Load the checkpoint ``resume`` names (``"auto"``: the newest valid one of ``run_dir``, if any).

    Returns:
        (step to continue from, non-finite steps so far); (0, 0) when starting fresh.
    """
    if resume == "auto":
        restored = load_latest_checkpoint(run_dir, optimizer, scheduler, scaler)
    else:
        restored = load_checkpoint(Path(resume), optimizer, scheduler, scaler) if resume else None
    if restored is None:
        return 0, 0
    method.load_checkpoint_state(restored.model_state)
    log.info("resumed from %s at step %d", restored.path, restored.step)
    return restored.step, int(restored.extra.get("nonfinite_steps", 0))


def _optimizer_step(acc: Any, model: nn.Module, batches: Iterator[dict], train_cfg: TrainConfig,
                    optim_cfg: OptimConfig) -> tuple[dict[str, float], bool]:
    """Forward and backward over ``train.grad_accum`` micro-batches (gradients clipped, not applied).

    Returns:
        (loss terms averaged over micro-batches, plus ``grad_norm`` when clipping; True if a loss was
        non-finite on any process, so the step must be skipped).
    """
    from accelerate.utils import send_to_device

    sums: dict[str, float] = {}
    skip = False
    for _ in range(train_cfg.grad_accum):
        batch = send_to_device(next(batches), acc.device)
        with acc.accumulate(model):
            out = model(batch)
            bad = acc.reduce(torch.tensor(float(not torch.isfinite(out.loss)), device=acc.device), "sum")
            if bad > 0:  # every process skips the same step, so DDP stays in lockstep
                skip = True
            else:
                acc.backward(out.loss)
            for key, value in {"loss": out.loss, **out.logs}.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach()) / train_cfg.grad_accum
            if acc.sync_gradients and not skip and optim_cfg.grad_clip > 0:
                sums["grad_norm"] = float(acc.clip_grad_norm_(model.parameters(), optim_cfg.grad_clip))
    return sums, skip


def _check_finite_everywhere(acc: Any, method: Method, what: str) -> None:
    """Raise :class:`NonFiniteWeightsError` on every process when any process's weights hold a NaN or an
    infinity: a check on the main process alone (in ``save_checkpoint``) would leave the others waiting
    at the next barrier."""
    state = method.checkpoint_state()
    if acc.reduce(torch.tensor(float(bool(nonfinite_names(state))), device=acc.device), "sum") > 0:
        check_finite_weights(state, what)  # names the tensors where this process sees them
        raise NonFiniteWeightsError(f"{what}: training diverged on another process; nothing was saved")


def train(method: Method, dataset: Dataset, collate: Callable[[list], dict], train_cfg: TrainConfig,
          optim_cfg: OptimConfig, out_dir: str | Path, seed: int, resume: str = "", run_config: Any = None,
          vit_depth: int = 0, progress: bool = True, overwrite: bool = False) -> TrainResult:
    """Train ``method`` on ``dataset``; write checkpoints, logs and exported weights to ``out_dir``.

    Args:
        resume: ``""`` (start fresh), ``"auto"`` (the newest valid checkpoint of ``out_dir`` if any)
            or a checkpoint folder.
        run_config: the resolved run config, saved as ``config.yaml`` next to the outputs.
        vit_depth: number of ViT blocks, for layer-wise lr decay (0: off).
        overwrite: replace a non-empty ``out_dir`` once the run has finished (:mod:`engine.output`);
            without it or ``resume``, a non-empty ``out_dir`` is refused.

    Raises:
        OutputDirError, CheckpointError, ConfigError, NonFiniteLossError, NonFiniteWeightsError: see
        their messages; a diverged model is never saved.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    folder = run_folder(out_dir, resume, overwrite)
    acc = Accelerator(mixed_precision=train_cfg.mixed_precision,
                      gradient_accumulation_steps=train_cfg.grad_accum)
    set_seed(seed)
    schedule = GlobalBatchSchedule(len(dataset), train_cfg.batch_size, acc.num_processes, train_cfg.grad_accum, seed)
    total_steps = _total_steps(train_cfg, schedule)
    optimizer = build_optimizer(method, optim_cfg, vit_depth)
    scheduler = build_scheduler(optimizer, optim_cfg, total_steps)
    if acc.num_processes > 1 and acc.device.type == "cuda":  # SyncBatchNorm is GPU-only
        method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
    method.to(acc.device)
    model, optimizer = acc.prepare(method, optimizer)
    unwrapped: Method = acc.unwrap_model(model)

    start, nonfinite = _restore(resume, folder.work, optimizer, scheduler, acc.scaler, unwrapped)
    if acc.is_main_process:
        folder.begin()
        if run_config is not None:
            save_run_config(run_config, folder.work)
    loader = DataLoader(dataset, batch_sampler=_StepBatches(schedule, start, total_steps, acc.process_index),
                        collate_fn=collate, num_workers=getattr(getattr(dataset, "cfg", None), "num_workers", 0))
    run_log = _RunLog(folder.work, start, total_steps, acc.is_main_process, progress)
    model.train()
    batches = iter(loader)
    step, logs = start, {}
    t0 = time.perf_counter()
    try:
        while step < total_steps:
            sums, skip = _optimizer_step(acc, model, batches, train_cfg, optim_cfg)
            if skip:
                nonfinite += 1
                optimizer.zero_grad(set_to_none=True)
                log.warning("step %d: non-finite loss, step skipped (%d so far)", step, nonfinite)
                if nonfinite >= train_cfg.max_nonfinite:
                    raise NonFiniteLossError(f"{nonfinite} steps had a non-finite loss (train.max_nonfinite="
                                             f"{train_cfg.max_nonfinite}); lower optim.lr or use "
                                             f"train.mixed_precision=bf16/no")
            else:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                unwrapped.after_optimizer_step()
            scheduler.step()
            step += 1
            run_log.bar.update()
            if acc.num_processes > 1:  # log the mean over processes, not rank 0's share
                mean = acc.reduce(torch.tensor(list(sums.values()), device=acc.device), "mean")
                sums = dict(zip(sums, mean.tolist()))
            logs = {**sums, "lr": scheduler.get_last_lr()[0]}
            if acc.is_main_process and (step % train_cfg.log_every == 0 or step == total_steps):
                run_log.step(step, logs, (step - start) / (time.perf_counter() - t0))
            if (train_cfg.ckpt_every and step % train_cfg.ckpt_every == 0) or step == total_steps:
                _check_finite_everywhere(acc, unwrapped, f"{folder.work} at step {step}")
                acc.wait_for_everyone()
                if acc.is_main_process:
                    save_checkpoint(folder.work, step, unwrapped.checkpoint_state(), optimizer, scheduler,
                                    acc.scaler, {"nonfinite_steps": nonfinite}, train_cfg.keep_last)
        if acc.is_main_process:
            unwrapped.export(folder.work / "weights")
    finally:
        run_log.close()
    if acc.is_main_process:
        folder.finish()
    acc.wait_for_everyone()
    acc.end_training()
    return TrainResult(step, {k: v for k, v in logs.items() if not math.isnan(v)}, nonfinite, folder.final)
