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


@pytest.fixture(scope="session")
def textured_infos_dir(tmp_path_factory: pytest.TempPathFactory):
    """Info files of a tiny six-camera dataset whose images carry a smooth pattern (so the value
    under a pair is meaningful), prepared with ``data_prep.nuscenes_infos.prepare``."""
    import numpy as np
    from PIL import Image

    from data_prep.nuscenes_infos import prepare
    from tiny_nuscenes import write_tiny_nuscenes

    root = write_tiny_nuscenes(tmp_path_factory.mktemp("textured"), num_samples=4, six_cameras=True)
    v, u = np.mgrid[0:900, 0:1600].astype(np.float64)
    for i, path in enumerate(sorted(root.glob("samples/CAM_*/*.jpg"))):
        phase = 0.3 * i
        rgb = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * u / 260 + phase), 0.5 + 0.4 * np.cos(2 * np.pi * v / 150 + phase),
                        0.5 + 0.4 * np.sin(2 * np.pi * (u + v) / 210)], -1)
        Image.fromarray((rgb * 255).round().astype(np.uint8)).save(path, quality=95)
    prepare(root, "v1.0-mini", root / "infos", workers=1, progress=False)
    return root / "infos"


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory):
    """Dataroot (``Path``) of the tiny synthetic nuScenes-format set, generated once per session.

    ``configs/synthetic/tiny.yaml``: version ``v1.0-mini``; scene-0061 (mini_train, clear) and
    scene-0103 (mini_val, night+rain), 2 samples each, six 224x126 cameras, lidarseg labels,
    ``paired_clear/<sample>/<CAM>.jpg`` for the adverse samples and ``dense/<sample>/<CAM>_{class,depth}.png``.
    """
    from pathlib import Path

    from collab_distill.config import load_config
    from data_prep.synthetic.config import SyntheticConfig
    from data_prep.synthetic.generate import generate

    config = Path(__file__).resolve().parents[1] / "configs" / "synthetic" / "tiny.yaml"
    root = tmp_path_factory.mktemp("synthetic") / "nuscenes"
    generate(load_config(config, schema=SyntheticConfig), root, progress=False)
    return root


@pytest.fixture(scope="session")
def synthetic_infos(synthetic_root, tmp_path_factory: pytest.TempPathFactory):
    """Folder with ``infos_train.json`` (clear) and ``infos_val.json`` (night+rain) of the tiny synthetic set
    (written outside ``synthetic_root``, which stays as the generator wrote it)."""
    from data_prep.nuscenes_infos import prepare

    out = tmp_path_factory.mktemp("synthetic_infos")
    prepare(synthetic_root, "v1.0-mini", out, workers=1, progress=False)
    return out


@pytest.fixture
def damaged_copy(synthetic_root, synthetic_infos, tmp_path):
    """``damage(field, keep_bytes) -> (root, path, num_points)``: a copy of the synthetic dataroot in
    which the file ``field`` (``"lidar_path"`` or ``"lidarseg_path"``) of the first train sample is cut
    to ``keep_bytes`` after prepare; ``num_points`` is the count its info record holds."""
    import os
    import shutil

    from collab_distill.data.infos import load_infos

    def damage(field: str, keep_bytes: int):
        root = shutil.copytree(synthetic_root, tmp_path / "damaged_nuscenes")
        info = load_infos(synthetic_infos / "infos_train.json").samples[0]
        path = root / getattr(info, field)
        os.truncate(path, keep_bytes)
        return root, path, info.num_points

    return damage


@pytest.fixture
def two_cpu_processes(tmp_path) -> tuple[list[str], dict[str, str]]:
    """The command prefix of an ``accelerate launch`` of two CPU processes (gloo) on a free port (other test
    runs may hold a fixed one), and the environment to run it in."""
    import socket
    import sys
    from pathlib import Path

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    launcher = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--main_process_port", str(port), "--mixed_precision", "no",
                "--dynamo_backend", "no"]
    return launcher, env
