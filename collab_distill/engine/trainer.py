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

from collab_distill.config import ConfigError, OptimConfig, RunConfig, TrainConfig, save_run_config
from collab_distill.engine.checkpoint import load_checkpoint, load_latest_checkpoint, save_checkpoint
from collab_distill.engine.optim import build_optimizer, build_scheduler
from collab_distill.engine.output import RunFolder, run_folder
from collab_distill.engine.sampler import GlobalBatchSchedule
from collab_distill.errors import UserError
from collab_distill.methods.base import Method
from collab_distill.methods.common import float_images
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

    Each micro-batch is copied to the device (non-blocking from pinned memory) and its uint8 images
    become floats there (:func:`~collab_distill.methods.common.float_images`).

    Returns:
        (loss terms averaged over micro-batches, plus ``grad_norm`` when clipping; True if a loss was
        non-finite on any process, so the step must be skipped).
    """
    from accelerate.utils import send_to_device

    sums: dict[str, float] = {}
    skip = False
    for _ in range(train_cfg.grad_accum):
        batch = float_images(send_to_device(next(batches), acc.device, non_blocking=True))
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


@dataclass
class _Session:
    """One process's training state: the accelerator, the (wrapped) model and the method itself, the
    optimiser and lr schedule, the run folder, the config and batch schedule, and where the loop stands."""

    acc: Any
    model: nn.Module                     # what forward/backward run on (DDP-wrapped with several processes)
    method: Method                       # the unwrapped method (hooks, checkpoint state, export)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    folder: RunFolder
    cfg: RunConfig
    schedule: GlobalBatchSchedule
    total_steps: int
    step: int = 0
    nonfinite: int = 0


def train(method: Method, dataset: Dataset, collate: Callable[[list], dict], cfg: RunConfig, resume: str = "",
          progress: bool = True, overwrite: bool = False) -> TrainResult:
    """Train ``method`` on ``dataset`` as ``cfg`` says; write checkpoints, logs, the resolved config and
    the exported weights to ``cfg.experiment.output_dir``.

    Args:
        cfg: the run config: ``train`` (loop), ``optim`` (with layer-wise lr decay for the ViT of
            :meth:`Method.layer_decay_vit`), ``experiment`` (output folder, seed); saved as ``config.yaml``.
        resume: ``""`` (start fresh), ``"auto"`` (the newest valid checkpoint of the output folder if any)
            or a checkpoint folder.
        overwrite: replace a non-empty output folder once the run has finished (:mod:`engine.output`);
            without it or ``resume``, a non-empty output folder is refused.

    Raises:
        OutputDirError, CheckpointError, ConfigError, NonFiniteLossError, NonFiniteWeightsError: see
        their messages; a diverged model is never saved.
    """
    s = _start(method, dataset, cfg, resume, overwrite)
    logs = _loop(s, iter(_loader(s, dataset, collate)),
                 _RunLog(s.folder.work, s.step, s.total_steps, s.acc.is_main_process, progress))
    return _finish(s, logs)


def _loader(s: _Session, dataset: Dataset, collate: Callable[[list], dict]) -> DataLoader:
    """This process's batches of steps ``s.step..s.total_steps`` from ``data.num_workers`` workers.

    One iterator spans the whole run (every epoch), so the workers live for the run as persistent
    workers would; each keeps ``prefetch_factor`` (torch's 2) batches ready. On a GPU the batches
    are pinned, so the step's host-to-device copies (``non_blocking``) overlap the work.
    """
    return DataLoader(dataset, batch_sampler=_StepBatches(s.schedule, s.step, s.total_steps, s.acc.process_index),
                      collate_fn=collate, num_workers=getattr(getattr(dataset, "cfg", None), "num_workers", 0),
                      pin_memory=s.acc.device.type == "cuda")


def _start(method: Method, dataset: Dataset, cfg: RunConfig, resume: str, overwrite: bool) -> _Session:
    """Accelerator, schedule, optimiser and scheduler; the model on its device; a checkpoint restored;
    the run folder begun and its ``config.yaml`` written (main process)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    folder = run_folder(cfg.experiment.output_dir, resume, overwrite)
    acc = Accelerator(mixed_precision=cfg.train.mixed_precision, gradient_accumulation_steps=cfg.train.grad_accum)
    set_seed(cfg.experiment.seed)
    schedule = GlobalBatchSchedule(len(dataset), cfg.train.batch_size, acc.num_processes, cfg.train.grad_accum,
                                   cfg.experiment.seed)
    total_steps = _total_steps(cfg.train, schedule)
    optimizer = build_optimizer(method, cfg.optim, method.layer_decay_vit())
    scheduler = build_scheduler(optimizer, cfg.optim, total_steps)
    if acc.num_processes > 1 and acc.device.type == "cuda":  # SyncBatchNorm is GPU-only
        method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
    method.to(acc.device)
    model, optimizer = acc.prepare(method, optimizer)
    s = _Session(acc, model, acc.unwrap_model(model), optimizer, scheduler, folder, cfg, schedule, total_steps)
    s.step, s.nonfinite = _restore(resume, folder.work, optimizer, scheduler, acc.scaler, s.method)
    if acc.is_main_process:
        folder.begin()
        save_run_config(cfg, folder.work)
    return s


def _loop(s: _Session, batches: Iterator[dict], run_log: _RunLog) -> dict[str, float]:
    """Optimiser steps until ``s.total_steps``, logging and checkpointing as configured, then the
    export (main process); returns the last step's logged values."""
    s.model.train()
    start, logs = s.step, {}
    t0 = time.perf_counter()
    try:
        while s.step < s.total_steps:
            sums, skip = _optimizer_step(s.acc, s.model, batches, s.cfg.train, s.cfg.optim)
            _apply_or_skip(s, skip)
            s.scheduler.step()
            s.step += 1
            run_log.bar.update()
            logs = {**_mean_over_processes(s.acc, sums), "lr": s.scheduler.get_last_lr()[0]}
            if s.acc.is_main_process and (s.step % s.cfg.train.log_every == 0 or s.step == s.total_steps):
                run_log.step(s.step, logs, (s.step - start) / (time.perf_counter() - t0))
            if (s.cfg.train.ckpt_every and s.step % s.cfg.train.ckpt_every == 0) or s.step == s.total_steps:
                _checkpoint(s)
        if s.acc.is_main_process:
            s.method.export(s.folder.work / "weights")
    finally:
        run_log.close()
    return logs


def _apply_or_skip(s: _Session, skip: bool) -> None:
    """Apply the accumulated gradients (then the method's post-step hook), or drop them after a
    non-finite loss, counting it.

    Raises:
        NonFiniteLossError: ``train.max_nonfinite`` steps were skipped.
    """
    if skip:
        s.nonfinite += 1
        s.optimizer.zero_grad(set_to_none=True)
        log.warning("step %d: non-finite loss, step skipped (%d so far)", s.step, s.nonfinite)
        if s.nonfinite >= s.cfg.train.max_nonfinite:
            raise NonFiniteLossError(f"{s.nonfinite} steps had a non-finite loss (train.max_nonfinite="
                                     f"{s.cfg.train.max_nonfinite}); lower optim.lr or use "
                                     "train.mixed_precision=bf16/no")
        return
    s.optimizer.step()
    s.optimizer.zero_grad(set_to_none=True)
    s.method.after_optimizer_step()


def _mean_over_processes(acc: Any, sums: dict[str, float]) -> dict[str, float]:
    """The step's logged values averaged over processes (not rank 0's share alone)."""
    if acc.num_processes == 1:
        return sums
    mean = acc.reduce(torch.tensor(list(sums.values()), device=acc.device), "mean")
    return dict(zip(sums, mean.tolist()))


def _checkpoint(s: _Session) -> None:
    """Save a checkpoint of step ``s.step`` (main process), after every process checked its weights."""
    _check_finite_everywhere(s.acc, s.method, f"{s.folder.work} at step {s.step}")
    s.acc.wait_for_everyone()
    if s.acc.is_main_process:
        save_checkpoint(s.folder.work, s.step, s.method.checkpoint_state(), s.optimizer, s.scheduler, s.acc.scaler,
                        {"nonfinite_steps": s.nonfinite}, s.cfg.train.keep_last)


def _finish(s: _Session, logs: dict[str, float]) -> TrainResult:
    """Move the finished run into place (main process), wait for every process, end the run."""
    if s.acc.is_main_process:
        s.folder.finish()
    s.acc.wait_for_everyone()
    s.acc.end_training()
    return TrainResult(s.step, {k: v for k, v in logs.items() if not math.isnan(v)}, s.nonfinite, s.folder.final)
