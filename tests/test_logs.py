"""Logs stay one short line per step: the synthetic world's summary, and no torch.fx notice from spconv."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from data_prep.synthetic.config import Condition
from data_prep.synthetic.generate import ScenePlan, Summary


def test_synthetic_summary_logs_one_short_line():
    conditions = ["clear", "night+rain", "clear", "fog"] * 50
    plans = [ScenePlan(index=i, name=f"scene-{i:04d}", split="train", condition=Condition.parse(text),
                       layout="street", location="boston-seaport", seed=i) for i, text in enumerate(conditions)]
    summary = Summary(root=Path("data/synthetic"), version="v1.0-trainval", scenes=plans, samples=2000,
                      images=12000, paired_images=0, points=10**8, noise_points=10**5, annotations=5000,
                      seconds=83.25, bytes=3 * 2**30)
    text = str(summary)
    assert "\n" not in text and len(text) < 160, text
    assert text.startswith("synthetic v1.0-trainval: 200 scenes (clear 100, fog 50, night+rain 50), 2000 samples")
    assert text.endswith("3072.0 MiB in 83.2 s -> data/synthetic")
    assert len(repr(summary)) > 10 * len(text)  # what the log printed before


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_sparse_tensor_construction_logs_no_fx_notice():
    import spconv.pytorch as sp
    from torch.fx import _symbolic_trace

    import collab_distill.models.point_encoder  # noqa: F401  (installs the filter)

    logger = logging.getLogger(_symbolic_trace.__name__)
    records = _Records()
    logger.addHandler(records)
    try:
        _symbolic_trace.is_fx_tracing_warning.cache_clear()  # the notice is logged once per process
        sp.SparseConvTensor(torch.zeros(1, 2), torch.zeros(1, 4, dtype=torch.int32), [4, 4, 4], 1)
        logger.warning("another torch.fx message")
    finally:
        logger.removeHandler(records)
    assert records.messages == ["another torch.fx message"]
