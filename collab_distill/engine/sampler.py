"""Deterministic, resumable sharding of total batches over processes and accumulation steps."""
from __future__ import annotations

import torch

from collab_distill.config import ConfigError


class GlobalBatchSchedule:
    """Which dataset indices each process reads at each micro-step.

    Every epoch is a permutation of the dataset seeded by ``(seed, epoch)``; optimiser step ``s``
    takes the ``total_batch`` indices ``perm[j*T:(j+1)*T]`` (``j = s mod steps_per_epoch``, the last
    incomplete batch dropped). They are split into ``accum`` micro-batches and each micro-batch into
    ``world`` contiguous shards, so one process with batch T and two processes with T/2 each see
    the same total batch. Resuming at step ``s`` needs nothing but ``s``.
    """

    def __init__(self, dataset_len: int, total_batch: int, world: int, accum: int, seed: int) -> None:
        if total_batch % (world * accum):
            raise ConfigError(f"train.batch_size={total_batch} is the total batch and must be divisible by "
                             f"processes x grad_accum = {world} x {accum}")
        if dataset_len < total_batch:
            raise ConfigError(f"the dataset has {dataset_len} samples, fewer than train.batch_size={total_batch}; "
                              "lower train.batch_size or add samples (data.info_dir, data.conditions)")
        self.dataset_len, self.total, self.world, self.accum, self.seed = dataset_len, total_batch, world, accum, seed
        self.per_process = total_batch // (world * accum)
        self.steps_per_epoch = dataset_len // total_batch
        self._perm_epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.dataset_len, generator=gen), epoch
        return self._perm

    def epoch_of(self, step: int) -> int:
        """The epoch an optimiser step belongs to."""
        return step // self.steps_per_epoch

    def indices(self, step: int, micro: int, rank: int) -> list[int]:
        """Dataset indices of process ``rank`` at micro-step ``micro`` of optimiser step ``step``."""
        perm = self._permutation(self.epoch_of(step))
        start = (step % self.steps_per_epoch) * self.total + (micro * self.world + rank) * self.per_process
        return perm[start:start + self.per_process].tolist()
