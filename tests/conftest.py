"""Shared fixtures. Tests are CPU-only and deterministic."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_nusc_root(tmp_path_factory: pytest.TempPathFactory):
    """Path of a tiny hand-written nuScenes-format dataset (see tests/tiny_nuscenes.py)."""
    from tiny_nuscenes import write_tiny_nuscenes

    return write_tiny_nuscenes(tmp_path_factory.mktemp("tiny_nuscenes"))
