"""The data path for GPUs: uint8 images (the same floats once converted on the device, the same loss and
the same training run), and image-only methods that never open a LiDAR file."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from collab_distill.config import RunConfig, load_config
from collab_distill.data.collate import Collate
from collab_distill.data.dataset import DataFileError, PairedDataset
from collab_distill.engine.run import run_training
from collab_distill.methods.common import float_images
from collab_distill.methods.registry import build_method, method_class

SMALL = ["model.image.name=vit_pico_patch14_cpu", "data.image_size=[56,112]", "data.max_points=1500",
         "model.point.stem_width=8", "model.point.enc_widths=[8,16]", "model.point.enc_depths=[1,1]",
         "model.point.dec_widths=[16,16]", "model.point.dec_depths=[1,1]", "data.voxel_size=0.5",
         "train.batch_size=2", "train.log_every=1", "data.conditions=[all]", "method.degradations=[fog,night,jpeg]"]
CONFIGS = {"asymmetric": "configs/baselines/asymmetric.yaml", "self_distill": "configs/baselines/self_distill.yaml",
           "teacher_plus": "configs/baselines/teacher_plus.yaml", "stage1": "configs/stage1/synthetic.yaml",
           "teacher_pretrain": "configs/teacher/synthetic.yaml"}


def _cfg(name: str, infos_dir, *extra: str) -> RunConfig:
    overrides = [o for o in SMALL if name in ("asymmetric", "self_distill") or not o.startswith("method.")]
    return load_config(CONFIGS[name], [f"data.info_dir={infos_dir}", *overrides, *extra])


def _uint8(cfg: RunConfig) -> RunConfig:
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, image_dtype="uint8"))


def test_uint8_images_are_the_float_images_before_the_division(textured_infos_dir):
    cfg = _cfg("stage1", textured_infos_dir, "data.cameras=[all]", "data.image_aug.random_crop=true",
               "data.image_aug.hflip_prob=0.5", "data.image_aug.scale_range=[1.0,1.3]")
    plain, small = PairedDataset(cfg.data, seed=3)[(1, 2)], PairedDataset(_uint8(cfg).data, seed=3)[(1, 2)]
    assert plain["images"].dtype == torch.float32 and small["images"].dtype == torch.uint8
    assert torch.equal(float_images({"images": small["images"]})["images"], plain["images"])
    for key in ("points", "K", "pair_point", "pair_uv"):                  # the same augmentation draws
        assert torch.equal(plain[key], small[key]), key


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_uint8_batch_gives_the_loss_of_the_float_batch(name, request):
    infos = request.getfixturevalue("synthetic_infos" if name == "teacher_pretrain" else "textured_infos_dir")  # labels
    cfg = _cfg(name, infos, "data.cameras=[CAM_FRONT,CAM_BACK]")
    torch.manual_seed(0)
    method = build_method(cfg).train(False)
    collate, points = Collate(cfg.data.voxel_size), method_class(name).needs_points
    losses = []
    for data in (cfg.data, _uint8(cfg).data):
        dataset = PairedDataset(data, seed=1, with_points=points)
        batch = collate([dataset[(0, 1)], dataset[(1, 1)]])
        with torch.no_grad():
            losses.append(method(float_images(batch)).loss)
    assert torch.isfinite(losses[0]) and torch.equal(losses[0], losses[1])


def _without_lidar_files(textured_infos_dir, tmp_path):
    """A copy of the textured dataroot with no point or label file (every ``.bin`` left out)."""
    return shutil.copytree(textured_infos_dir.parent, tmp_path / "no_lidar", ignore=shutil.ignore_patterns("*.bin"))


def test_image_only_methods_train_without_opening_a_lidar_file(textured_infos_dir, tmp_path):
    root = _without_lidar_files(textured_infos_dir, tmp_path)
    assert not list(root.rglob("*.bin"))
    cfg = _cfg("asymmetric", textured_infos_dir, f"data.dataroot={root}", "train.max_steps=2",
               f"experiment.output_dir={tmp_path / 'run'}", "data.image_dtype=uint8")
    assert method_class("asymmetric").needs_points is False and method_class("stage1").needs_points
    item = PairedDataset(cfg.data, with_points=False)[0]
    assert "points" not in item and "pair_point" not in item and item["images"].dtype == torch.uint8
    batch = Collate(cfg.data.voxel_size)([item, item])
    assert not {"points", "offsets", "pair_point", "labels", "voxel_coords"} & set(batch)
    assert batch["images"].shape[0] == 2 * len(item["cameras"])
    result = run_training(cfg, progress=False)                       # run.py asks the method: no points
    assert result.steps == 2
    with pytest.raises(DataFileError, match=r"\.pcd\.bin"):          # a method that needs points would fail
        PairedDataset(cfg.data)[0]


def test_uint8_images_train_as_the_float_images(textured_infos_dir, tmp_path):
    """The trainer converts uint8 on the device at the start of the step: the same losses, step by step."""
    losses = []
    for dtype in ("float32", "uint8"):
        out = tmp_path / dtype
        cfg = _cfg("self_distill", textured_infos_dir, "train.max_steps=3", f"experiment.output_dir={out}",
                   f"data.image_dtype={dtype}", "optim.lr=5e-4", "data.cameras=[CAM_FRONT]")
        run_training(cfg, progress=False)
        losses.append([json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()])
    assert len(losses[0]) == 3 and losses[0] == losses[1]
