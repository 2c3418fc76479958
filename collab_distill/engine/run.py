"""Build everything a training run needs from its config and train (what the train_* tools call)."""
from __future__ import annotations

import logging

from collab_distill.config import RunConfig
from collab_distill.data.collate import Collate
from collab_distill.data.dataset import PairedDataset
from collab_distill.engine.output import run_folder
from collab_distill.engine.trainer import TrainResult, train
from collab_distill.methods.registry import build_method, method_class

log = logging.getLogger(__name__)


def run_training(cfg: RunConfig, resume: str = "", progress: bool = True, overwrite: bool = False) -> TrainResult:
    """Dataset, method and trainer from ``cfg``; outputs go to ``cfg.experiment.output_dir``.

    ``resume`` and ``overwrite``: see :func:`~collab_distill.engine.trainer.train`.
    """
    from accelerate.utils import set_seed

    run_folder(cfg.experiment.output_dir, resume, overwrite)  # refuse a non-empty folder before building the model
    dataset = PairedDataset(cfg.data, seed=cfg.experiment.seed, train=True,
                            **method_class(cfg.method.name).dataset_options(cfg))
    set_seed(cfg.experiment.seed)  # random initialisations are part of the run's determinism
    method = build_method(cfg)
    log.info("%s: %d samples (%s), trainable %s, frozen %s", cfg.method.name, len(dataset), cfg.data.conditions,
             list(method.trainable_modules()), list(method.frozen_modules()))
    return train(method, dataset, Collate(cfg.data.voxel_size), cfg, resume, progress, overwrite)
