"""The nuScenes configs (collab_distill/configs/nuscenes/, docs/nuscenes.md): every method of the guide with
both DINOv2 teachers, and the choices the runs rely on agree across the files."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from collab_distill.config import ImageAug, RunConfig, load_config
from collab_distill.engine.sampler import GlobalBatchSchedule
from collab_distill.methods.registry import method_names

ROOT = Path(__file__).resolve().parents[1] / "collab_distill" / "configs" / "nuscenes"
MODELS = {"vit_s14": "vit_small_patch14_dinov2", "vit_b14": "vit_base_patch14_dinov2"}
METHODS = ("stage1", "stage2", *method_names("baseline"))
RUNS = [(model, method) for model in MODELS for method in METHODS]
GPUS = 8                                   # the files are sized for 8 GPUs; P GPUs add train.grad_accum=8/P
TRAIN_KEYFRAMES = 28_130                   # nuScenes v1.0-trainval, train split


def run_config(model: str, method: str, *overrides: str) -> RunConfig:
    return load_config(ROOT / model / f"{method}.yaml", list(overrides))


def test_one_runnable_file_per_model_and_method_and_every_file_declares_its_schema():
    runnable = {(p.parent.name, p.stem) for p in ROOT.glob("vit_*/*.yaml")}
    assert runnable == set(RUNS)
    probes = {"probe_seg.yaml": "probe", "probe_depth.yaml": "probe", "probe_lidar.yaml": "lidar_probe"}
    assert {p.name for p in ROOT.glob("probe_*.yaml")} == set(probes)
    for path in ROOT.rglob("*.yaml"):
        assert yaml.safe_load(path.read_text())["schema"] == probes.get(path.name, "run"), path


@pytest.mark.parametrize(("model", "method"), RUNS)
def test_each_file_runs_its_method_with_its_teacher_on_gpu_settings(model, method):
    cfg = run_config(model, method)
    assert cfg.method.name == method
    assert cfg.model.image.name == MODELS[model] and cfg.model.image.weights
    assert cfg.experiment.output_dir == f"runs/nuscenes/{model}/{method}"
    assert cfg.train.mixed_precision == "bf16" and cfg.data.image_dtype == "uint8"
    assert cfg.data.num_workers > 0 and cfg.data.nsweeps == 10 and cfg.data.split == "train"
    assert cfg.data.cameras == ["all"]
    assert all(side % 14 == 0 for side in cfg.data.image_size)


@pytest.mark.parametrize(("model", "method"), RUNS)
def test_the_total_batch_splits_evenly_on_one_gpu_with_accumulation_and_on_eight(model, method):
    """What the trainer requires (GlobalBatchSchedule), with the same samples per GPU and micro-step."""
    per_gpu = set()
    for gpus in (1, GPUS):
        cfg = run_config(model, method, f"train.grad_accum={GPUS // gpus}")
        schedule = GlobalBatchSchedule(TRAIN_KEYFRAMES, cfg.train.batch_size, gpus, cfg.train.grad_accum, seed=0)
        per_gpu.add(schedule.per_process)
    assert len(per_gpu) == 1 and per_gpu.pop() >= 1


@pytest.mark.parametrize("model", MODELS)
def test_stage1_reads_its_store_with_3d_augmentation_only(model):
    cfg = run_config(model, "stage1")
    assert cfg.method.teacher_store == f"runs/nuscenes/{model}/teacher_store"
    assert cfg.data.conditions == ["clear"]
    assert cfg.data.augment and cfg.data.image_aug == ImageAug()   # the store refuses image augmentation
    assert cfg.data.point_aug.rotate_deg > 0 and cfg.data.point_aug.flip_prob > 0


@pytest.mark.parametrize("model", MODELS)
def test_stage2_and_the_baselines_match_the_stage1_run_of_their_teacher(model):
    stage1, stage2 = run_config(model, "stage1"), run_config(model, "stage2")
    assert stage2.method.point_weights == f"{stage1.experiment.output_dir}/weights"
    # stage 2 rebuilds stage 1's LiDAR encoder and head and feeds them the same points and pixels
    assert (stage2.model.point, stage2.model.head) == (stage1.model.point, stage1.model.head)
    for key in ("nsweeps", "voxel_size", "image_size", "min_depth"):
        assert getattr(stage2.data, key) == getattr(stage1.data, key), key
    for method in METHODS[1:]:
        cfg = run_config(model, method)
        assert cfg.model.image == stage1.model.image, method      # the same teacher, block and norm
        assert (cfg.optim, cfg.train) == (stage2.optim, stage2.train), method  # data-matched: method only
    assert not stage2.data.augment


def test_the_two_teachers_write_to_different_places():
    places = [run_config(model, "stage1").method.teacher_store for model in MODELS]
    places += [run_config(model, method).experiment.output_dir for model, method in RUNS]
    assert len(set(places)) == len(places)
