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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from collab_distill.config import OptimConfig, TrainConfig, save_run_config
from collab_distill.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from collab_distill.engine.optim import build_optimizer, build_scheduler
from collab_distill.engine.sampler import GlobalBatchSchedule
from collab_distill.methods.base import Method

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
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


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is pinned in requirements.txt; keep training without it
        log.warning("tensorboard is not installed: logging to metrics.jsonl only")
        return None
    return SummaryWriter(str(out_dir / "tb"))


def train(method: Method, dataset: Dataset, collate: Callable[[list], dict], train_cfg: TrainConfig,
          optim_cfg: OptimConfig, out_dir: str | Path, seed: int, resume: str = "", run_config: Any = None,
          vit_depth: int = 0, progress: bool = True) -> TrainResult:
    """Train ``method`` on ``dataset``; write checkpoints, logs and exported weights to ``out_dir``.

    Args:
        resume: ``""`` (start fresh), ``"auto"`` (the newest complete checkpoint of ``out_dir`` if any)
            or a checkpoint folder.
        run_config: the resolved run config, saved as ``config.yaml`` next to the outputs.
        vit_depth: number of ViT blocks, for layer-wise lr decay (0: off).
    """
    from accelerate import Accelerator
    from accelerate.utils import send_to_device, set_seed
    from tqdm import tqdm

    acc = Accelerator(mixed_precision=train_cfg.mixed_precision,
                      gradient_accumulation_steps=train_cfg.grad_accum)
    out_dir = Path(out_dir)
    set_seed(seed)
    schedule = GlobalBatchSchedule(len(dataset), train_cfg.batch_size, acc.num_processes, train_cfg.grad_accum, seed)
    total_steps = train_cfg.max_steps or train_cfg.epochs * schedule.steps_per_epoch
    optimizer = build_optimizer(method, optim_cfg, vit_depth)
    scheduler = build_scheduler(optimizer, optim_cfg, total_steps)
    if acc.num_processes > 1 and acc.device.type == "cuda":  # SyncBatchNorm is GPU-only
        method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
    method.to(acc.device)
    model, optimizer = acc.prepare(method, optimizer)
    unwrapped: Method = acc.unwrap_model(model)

    start, nonfinite = 0, 0
    ckpt = latest_checkpoint(out_dir) if resume == "auto" else (Path(resume) if resume else None)
    if ckpt is not None:
        start, state, extra = load_checkpoint(ckpt, optimizer, scheduler, acc.scaler)
        unwrapped.load_checkpoint_state(state)
        nonfinite = int(extra.get("nonfinite_steps", 0))
        log.info("resumed from %s at step %d", ckpt, start)
    if acc.is_main_process and run_config is not None:
        save_run_config(run_config, out_dir)
    loader = DataLoader(dataset, batch_sampler=_StepBatches(schedule, start, total_steps, acc.process_index),
                        collate_fn=collate, num_workers=getattr(getattr(dataset, "cfg", None), "num_workers", 0))
    writer = _tensorboard(out_dir) if acc.is_main_process else None
    metrics = (out_dir / "metrics.jsonl").open("a") if acc.is_main_process else None
    bar = tqdm(total=total_steps, initial=start, desc="train", unit="step",
               disable=not (progress and acc.is_main_process))
    model.train()
    batches = iter(loader)
    step, logs = start, {}
    t0 = time.perf_counter()
    while step < total_steps:
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
        bar.update()
        if acc.num_processes > 1:  # log the mean over processes, not rank 0's share
            mean = acc.reduce(torch.tensor(list(sums.values()), device=acc.device), "mean")
            sums = dict(zip(sums, mean.tolist()))
        logs = {**sums, "lr": scheduler.get_last_lr()[0]}
        if acc.is_main_process and (step % train_cfg.log_every == 0 or step == total_steps):
            rate = (step - start) / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{logs['loss']:.4f}")
            metrics.write(json.dumps({"step": step, **logs, "steps_per_s": rate}) + "\n")
            metrics.flush()
            if writer is not None:
                for key, value in logs.items():
                    writer.add_scalar(f"train/{key}", value, step)
        if (train_cfg.ckpt_every and step % train_cfg.ckpt_every == 0) or step == total_steps:
            acc.wait_for_everyone()
            if acc.is_main_process:
                save_checkpoint(out_dir, step, unwrapped.checkpoint_state(), optimizer, scheduler, acc.scaler,
                                {"nonfinite_steps": nonfinite}, train_cfg.keep_last)
    bar.close()
    if acc.is_main_process:
        unwrapped.export(out_dir / "weights")
        if writer is not None:
            writer.close()
        metrics.close()
    acc.wait_for_everyone()
    acc.end_training()
    return TrainResult(step, {k: v for k, v in logs.items() if not math.isnan(v)}, nonfinite, out_dir)
