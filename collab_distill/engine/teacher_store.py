"""Build a teacher-feature store (``tools/cache_teacher.py``): the frozen teacher over every camera image
of stage 1's samples, once, written to :mod:`collab_distill.data.feature_store`'s float16 shards.

The rows are the (sample, camera) images of the samples the run config selects (``data.split``,
``data.conditions``), every camera present, loaded with the evaluation transform (resize to cover,
centre crop: no image augmentation) in DataLoader workers (``data.num_workers``). Under ``accelerate
launch`` each process takes every ``P``-th row and writes its own shard; the main process marks the
store complete after all have finished. Progress is recorded per shard after the data is flushed, so
a killed build started again with the same command resumes where it stopped and gives the same
store.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from collab_distill.config import ImageAug, RunConfig
from collab_distill.data.dataset import DataFileError
from collab_distill.data.feature_store import (
    INDEX_FILE,
    MAP_DTYPE,
    STORE_VERSION,
    FeatureStoreError,
    image_rows,
    info_fingerprint,
    teacher_fields,
)
from collab_distill.data.info_store import InfoSelection, InfoStore, store_path
from collab_distill.data.shards import META_FILE, ShardWriter, begin_or_resume, finish_build, partial_path
from collab_distill.data.transforms import load_image
from collab_distill.methods.common import build_image_encoder
from collab_distill.methods.stage1 import teacher_identity

log = logging.getLogger(__name__)

PRECISION = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}  # train.mixed_precision -> autocast dtype


class StoreImages(Dataset):
    """The images of some store rows with the evaluation transform.

    Args:
        info: the info store.
        rows: ``(R, 2)`` ``(sample index, camera slot)``.
        image_size: ``(H, W)``.
    """

    def __init__(self, info: InfoStore, rows: np.ndarray, image_size: tuple[int, int]) -> None:
        self.info, self.rows, self.image_size = info, rows, tuple(image_size)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``image (3, H, W)`` float in [0, 1] and its ``K (3, 3)`` float64.

        Raises:
            DataFileError: the image file cannot be read.
        """
        sample, slot = (int(v) for v in self.rows[i])
        cam = self.info.sample(sample).cameras[self.info.cameras[slot]]
        path = self.info.dataroot / cam.path
        try:
            image, k = load_image(path, self.image_size, cam.K, np.random.default_rng(0), ImageAug())
        except OSError as exc:
            raise DataFileError(f"{path}: cannot read the image ({exc}); check the dataroot or re-run "
                                "tools/prepare_nuscenes.py") from None
        return image, torch.from_numpy(k)


def store_meta(cfg: RunConfig, info: InfoStore, identity: dict[str, Any], rows: int, processes: int
               ) -> dict[str, Any]:
    """The ``meta.json`` of a store for ``cfg`` (without ``complete``): what :class:`FeatureStore`
    checks and what a resumed build must match."""
    return {"store_version": STORE_VERSION, "teacher": identity, "teacher_weights": str(cfg.model.image.weights),
            "data": {**info_fingerprint(info), "cameras": list(info.cameras), "conditions": list(cfg.data.conditions),
                     "info_store": str(info.path)},
            "rows": rows, "processes": processes, "map_shape": [identity["embed_dim"], *identity["grid"]],
            "dtype": MAP_DTYPE.name}


def build_teacher_store(cfg: RunConfig, out: str | Path, batch_size: int = 16, overwrite: bool = False,
                        progress: bool = True, commit_seconds: float = 30.0) -> Path:
    """Build (or resume) the teacher-feature store of ``cfg`` in the folder ``out``, in every process of
    an ``accelerate launch`` (or in this one).

    Args:
        cfg: a stage-1 run config: the teacher (``model.image``, built after seeding with
            ``experiment.seed``, as stage 1 builds it, so ``random`` weights are the run's), the data
            (``data.info_dir``, ``split``, ``conditions``, ``image_size``, ``num_workers``) and
            ``train.mixed_precision`` (the teacher's autocast on a GPU).
        out: the store folder; the build writes ``.<name>.partial`` beside it and renames it into place.
        batch_size: images per teacher forward pass, per process.
        overwrite: replace a store (or a non-empty folder) at ``out`` once the new one is complete, and
            discard a build in progress of another teacher or data.
        commit_seconds: flush and record progress at least this often (and at the end).

    Returns:
        ``out``.

    Raises:
        FeatureStoreError: ``out`` is taken (without ``overwrite``), a build in progress is of another
            teacher, data or process count, or no sample is selected.
        InfoFileError, WeightsError, DataFileError: the info store, the teacher's weights or an image.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env, set_seed
    from tqdm import tqdm

    # as Accelerator does: without cpu=True, PartialState ignores ACCELERATE_USE_CPU and every process is rank 0
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    out, folder = Path(out), partial_path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        what = "a teacher-feature store" if (out / META_FILE).is_file() else "a non-empty folder"
        raise FeatureStoreError(f"{out} is {what}; use --overwrite to replace it (it stays until the new store is "
                                "complete)")
    info = InfoStore(store_path(cfg.data.info_dir, cfg.data.split), cfg.data.dataroot or None)
    selected = InfoSelection(info, cfg.data.conditions).indices
    if not len(selected):
        raise FeatureStoreError(f"{info.path}: no sample has a condition in data.conditions={cfg.data.conditions}")
    set_seed(cfg.experiment.seed)   # a random teacher is the one stage 1 builds with this seed
    teacher = build_image_encoder(cfg).freeze().to(state.device)
    rows = image_rows(info, selected)
    meta = store_meta(cfg, info, teacher_identity(teacher), len(rows), state.num_processes)
    index = np.full((len(info), len(info.cameras)), -1, dtype=np.int64)
    index[rows[:, 0], rows[:, 1]] = np.arange(len(rows))
    if begin_or_resume(folder, meta, {INDEX_FILE: index}, overwrite=overwrite, main=state.is_main_process,
                       wait=state.wait_for_everyone, error=FeatureStoreError):
        log.info("resuming the teacher-feature store build in %s", folder)
    del index
    writer = ShardWriter(folder, state.process_index, state.num_processes, len(rows),
                         teacher_fields(meta["map_shape"]))
    todo = rows[state.process_index::state.num_processes][writer.done:]
    loader = DataLoader(StoreImages(info, todo, cfg.data.image_size), batch_size=batch_size,
                        num_workers=cfg.data.num_workers, pin_memory=state.device.type == "cuda")
    bar = tqdm(total=writer.size, initial=writer.done, desc="teacher maps", unit="image",
               disable=not (progress and state.is_main_process))
    dtype = PRECISION[cfg.train.mixed_precision] if state.device.type == "cuda" else None
    with torch.inference_mode(), torch.autocast(state.device.type, dtype=dtype, enabled=dtype is not None):
        for images, k in loader:
            maps = teacher(images.to(state.device, non_blocking=True)).patch[-1]
            writer.write(maps=maps.to(torch.float16).cpu().numpy(), K=k.numpy())
            bar.update(len(images))
            writer.commit_every(commit_seconds)
    writer.commit()
    bar.close()
    state.wait_for_everyone()
    if state.is_main_process:
        finish_build(folder, out, FeatureStoreError)
        log.info("teacher-feature store %s: %d images of %d samples, %.2f GiB", out, len(rows), len(selected),
                 len(rows) * int(np.prod(meta["map_shape"])) * MAP_DTYPE.itemsize / 2**30)
    state.wait_for_everyone()
    return out
