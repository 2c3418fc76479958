"""The label-free teacher (teacher_ssl): its views (crop geometry, masks, seeding, independence from the
batch), its loss falls on the synthetic fixture, it trains without opening a LiDAR or label file, and it
exports the EMA teacher's ViT as teacher_pretrain does."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from collab_distill.config import ConfigError, RunConfig, load_config
from collab_distill.data.collate import Collate
from collab_distill.data.dataset import PairedDataset
from collab_distill.engine.run import run_training
from collab_distill.methods.registry import build_method, method_class
from collab_distill.methods.ssl_views import apply_masks, crop_boxes, patch_masks, random_resized_crops
from collab_distill.models.weights import WeightsError, read_state_dict

SMALL = ["model.image.name=vit_pico_patch14_cpu", "data.image_size=[56,112]", "data.cameras=[CAM_FRONT,CAM_BACK]",
         "train.batch_size=2", "train.log_every=1", "optim.warmup_steps=0", "method.out_dim=64",
         "method.hidden_dim=64", "method.bottleneck_dim=16"]


def _cfg(infos_dir, *extra: str) -> RunConfig:
    return load_config("configs/teacher/ssl.yaml", [f"data.info_dir={infos_dir}", *SMALL, *extra])


def _batch(cfg: RunConfig, epoch: int = 0) -> dict:
    dataset = PairedDataset(cfg.data, seed=cfg.experiment.seed, **method_class("teacher_ssl").dataset_options(cfg))
    return Collate(cfg.data.voxel_size)([dataset[(0, epoch)], dataset[(1, epoch)]])


def _fake_batch(count: int, height: int = 28, width: int = 56, epoch: int = 1) -> dict:
    """``count`` random images, two cameras per sample (the keys the views read)."""
    return {"images": torch.rand(count, 3, height, width, generator=torch.Generator().manual_seed(count)),
            "image_sample": torch.arange(count) // 2, "epoch": epoch,
            "tokens": [f"token{s}" for s in range((count + 1) // 2)],
            "cameras": ["CAM_FRONT" if i % 2 == 0 else "CAM_BACK" for i in range(count)]}


def test_a_crop_is_its_box_of_the_image_resized_and_flipped():
    """On an image whose value is its own horizontal (vertical) grid coordinate, the crop at each output pixel
    centre must read ``centre + flip * width * x`` (``centre + height * y``): bilinear sampling is exact on a
    linear image, so this checks the box, the flip and the orientation of the affine grid."""
    height, width = 28, 56
    batch = _fake_batch(8, height, width)
    xs = (torch.arange(width) + 0.5) / width * 2 - 1
    ys = (torch.arange(height) + 0.5) / height * 2 - 1
    batch["images"] = torch.stack([xs.expand(height, width), ys[:, None].expand(height, width),
                                   torch.zeros(height, width)]).expand(8, 3, height, width).contiguous()
    box = crop_boxes(batch, (0.3, 0.9), seed=0, view="a")
    assert ((box[:, 0] * box[:, 1] >= 0.3 - 1e-6) & (box[:, 0] * box[:, 1] <= 0.9 + 1e-6)).all()
    assert (box[:, 2].abs() + box[:, 0] <= 1 + 1e-6).all() and (box[:, 3].abs() + box[:, 1] <= 1 + 1e-6).all()
    assert set(box[:, 4].tolist()) == {-1.0, 1.0}                    # 8 images: both flips drawn
    crops = random_resized_crops(batch, batch["images"], (0.3, 0.9), seed=0, view="a")
    expect_x = box[:, 2, None, None] + (box[:, 4] * box[:, 0])[:, None, None] * xs.expand(height, width)
    expect_y = box[:, 3, None, None] + box[:, 1, None, None] * ys[:, None].expand(height, width)
    torch.testing.assert_close(crops[:, 0], expect_x, atol=1e-5, rtol=0)
    torch.testing.assert_close(crops[:, 1], expect_y, atol=1e-5, rtol=0)


def test_views_are_seeded_per_image_not_per_batch():
    batch = _fake_batch(6)
    crops = random_resized_crops(batch, batch["images"], (0.35, 1.0), seed=0, view="global0")
    assert torch.equal(crops, random_resized_crops(batch, batch["images"], (0.35, 1.0), seed=0, view="global0"))
    assert not torch.equal(crops, random_resized_crops(batch, batch["images"], (0.35, 1.0), seed=1, view="global0"))
    assert not torch.equal(crops, random_resized_crops(batch, batch["images"], (0.35, 1.0), seed=0, view="global1"))
    later = {**batch, "epoch": 2}
    assert not torch.equal(crops, random_resized_crops(later, batch["images"], (0.35, 1.0), seed=0, view="global0"))
    # the last sample's two images alone, as another batch composition would hold them
    alone = {"images": batch["images"][4:], "image_sample": torch.tensor([0, 0]), "epoch": 1,
             "tokens": [batch["tokens"][2]], "cameras": batch["cameras"][4:]}
    torch.testing.assert_close(random_resized_crops(alone, alone["images"], (0.35, 1.0), seed=0, view="global0"),
                               crops[4:], atol=1e-6, rtol=0)
    assert torch.equal(patch_masks(alone, (2, 4), 1.0, (0.25, 0.75), 0, "m"),
                       patch_masks(batch, (2, 4), 1.0, (0.25, 0.75), 0, "m")[4:])


def test_masks_cover_the_drawn_share_of_patches_with_the_fill_colour():
    batch = _fake_batch(40)
    masks = patch_masks(batch, (2, 4), prob=0.5, ratio=(0.25, 0.5), seed=0, view="m")
    counts = masks.flatten(1).sum(1)
    masked = counts > 0
    assert 5 < int(masked.sum()) < 35                                # about half the images
    assert ((counts[masked] >= 2) & (counts[masked] <= 4)).all()     # 25-50 % of 8 patches
    fill = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    out = apply_masks(batch["images"], masks, 14, fill)
    pixels = masks.repeat_interleave(14, 1).repeat_interleave(14, 2)[:, None].expand_as(out)
    assert torch.equal(out[~pixels], batch["images"][~pixels])
    assert torch.equal(out.permute(0, 2, 3, 1)[pixels[:, 0]], fill.view(1, 3).expand(int(pixels[:, 0].sum()), 3))


def test_a_reversed_range_is_a_config_error(synthetic_infos):
    with pytest.raises(ConfigError, match=r"^method.crop_scale=\[0.9, 0.3\]: give \[low, high\] with 0 < low <= high$"):
        build_method(_cfg(synthetic_infos, "method.crop_scale=[0.9,0.3]"))


def test_the_batch_has_no_lidar_and_the_loss_is_seeded(synthetic_infos):
    cfg = _cfg(synthetic_infos)
    assert method_class("teacher_ssl").needs_points is False
    batch = _batch(cfg)
    assert not {"points", "labels", "pair_point", "pair_depth", "offsets", "voxel_coords"} & set(batch)
    losses = []
    for seed in (0, 0, 1):
        torch.manual_seed(0)                                         # the same initial weights
        method = build_method(dataclasses.replace(cfg, experiment=dataclasses.replace(cfg.experiment, seed=seed)))
        with torch.no_grad():
            losses.append(float(method.train(False)(batch).loss))
    assert losses[0] == losses[1] and losses[0] != losses[2]         # the views follow experiment.seed


def test_the_student_learns_the_teachers_targets_and_the_ema_teacher_is_exported(synthetic_infos, tmp_path):
    """The logged loss is not a fixed objective (the EMA teacher and its centring move, and its entropy is part
    of the cross-entropy), so the student is trained against the initial teacher held still: its loss on a
    fixed batch must fall in every term. The EMA step and the centring are checked on their own below."""
    from collab_distill.engine.trainer import train
    from collab_distill.models import ImageEncoder

    cfg = _cfg(synthetic_infos, f"experiment.output_dir={tmp_path}", "train.max_steps=10", "optim.lr=2e-3")
    batch = _batch(cfg)
    torch.manual_seed(0)
    method = build_method(cfg)
    method.after_optimizer_step = lambda: None                       # the teacher and its centres held still
    method.centers.update = lambda *args: None
    with torch.no_grad():
        before = method.train(False)(batch)
    train(method, PairedDataset(cfg.data, seed=0, with_points=False), Collate(cfg.data.voxel_size), cfg,
          progress=False)
    with torch.no_grad():
        after = method.train(False)(batch)
    for term in ("dino", "ibot", "pixel"):
        assert float(after.logs[term]) < 0.9 * float(before.logs[term]), (term, before.logs, after.logs)
    # the exported teacher ViT is the teacher (what teacher_pretrain's file is to its encoder), not the student
    teacher = ImageEncoder(dataclasses.replace(cfg.model.image, weights=str(tmp_path / "weights" /
                                                                              "teacher_vit.safetensors")),
                           cfg.data.image_size).freeze()
    images = torch.rand(1, 3, *cfg.data.image_size)
    torch.testing.assert_close(teacher(images).patch[-1], method.teacher(images).patch[-1])
    assert not torch.allclose(teacher(images).patch[-1], method.student.eval()(images).patch[-1], atol=1e-3)


def test_the_ema_step_and_the_centring(synthetic_infos):
    cfg = _cfg(synthetic_infos, "method.ema_momentum=0.9", "method.center_momentum=0.8")
    method = build_method(cfg)
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(1.0)
    old = {k: v.clone() for k, v in method.teacher.named_parameters()}
    student = dict(method.student.named_parameters())
    method.after_optimizer_step()
    for name, value in method.teacher.named_parameters():
        torch.testing.assert_close(value, 0.9 * old[name] + 0.1 * student[name])
    logits = torch.randn(6, cfg.method.out_dim)
    method.centers.update("cls", logits, 0.8)
    torch.testing.assert_close(method.centers.cls, 0.2 * logits.mean(0))
    assert torch.equal(method.centers.patch, torch.zeros(cfg.method.out_dim))
    batch = _batch(cfg)
    centres = method.centers.cls.clone()
    with torch.no_grad():
        method.train(False)(batch)                                   # evaluation leaves the centres alone
    assert torch.equal(method.centers.cls, centres)
    method.train(True)(batch)
    assert not torch.equal(method.centers.cls, centres)


def test_it_trains_without_any_lidar_file(synthetic_root, synthetic_infos, tmp_path):
    root = shutil.copytree(synthetic_root, tmp_path / "no_lidar", ignore=shutil.ignore_patterns("*.bin"))
    assert not list(root.rglob("*.bin"))                             # no point cloud, no lidarseg label
    cfg = _cfg(synthetic_infos, f"data.dataroot={root}", f"experiment.output_dir={tmp_path / 'run'}",
               "train.max_steps=2")
    assert run_training(cfg, progress=False).steps == 2
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"dino", "ibot", "teacher_entropy"} <= set(logged[-1])
    assert {"student.safetensors", "student_head.safetensors", "pixel_head.safetensors", "teacher_head.safetensors",
            "teacher_vit.safetensors"} <= {p.name for p in (tmp_path / "run" / "weights").iterdir()}


def test_a_run_continues_the_exported_teachers_objective(synthetic_infos, tmp_path):
    """method.init_from + model.image.weights: the new run starts at the exported teacher, ViT and heads, and its
    first loss is not ~0 (the control learns something); a folder without the heads is one line."""
    first = _cfg(synthetic_infos, f"experiment.output_dir={tmp_path / 'teacher'}", "train.max_steps=3")
    run_training(first, progress=False)
    weights = tmp_path / "teacher" / "weights"
    cfg = _cfg(synthetic_infos, f"method.init_from={weights}",
               f"model.image.weights={weights / 'teacher_vit.safetensors'}", "data.conditions=[all]")
    method = build_method(cfg)
    exported = read_state_dict(weights / "teacher_head.safetensors")[0]
    for head in (method.student_head, method.teacher_head):
        assert all(torch.equal(v, exported[k]) for k, v in head.state_dict().items())
    assert all(torch.equal(v, w) for v, w in zip(method.student.state_dict().values(),
                                                 method.teacher.state_dict().values()))
    with torch.no_grad():
        loss = float(method.train(False)(_batch(cfg)).loss)
    assert loss > 0.5, loss
    with pytest.raises(WeightsError, match=r"^\S+/teacher_head\.safetensors not found: point method.init_from at the "
                                           r"weights/ folder of a teacher_ssl run"):
        build_method(_cfg(synthetic_infos, f"method.init_from={tmp_path}"))
    with pytest.raises(WeightsError, match=r"teacher_head\.safetensors does not fit this run's heads"):
        build_method(_cfg(synthetic_infos, f"method.init_from={weights}", "method.out_dim=32"))


def test_two_runs_with_one_seed_train_the_same_teacher(synthetic_infos, tmp_path):
    runs = []
    for name in ("a", "b"):
        cfg = _cfg(synthetic_infos, f"experiment.output_dir={tmp_path / name}", "train.max_steps=2")
        run_training(cfg, progress=False)
        runs.append(((tmp_path / name / "metrics.jsonl").read_text().splitlines(),
                     read_state_dict(tmp_path / name / "weights" / "teacher_vit.safetensors")[0]))
    (log_a, vit_a), (log_b, vit_b) = runs
    assert [json.loads(line)["loss"] for line in log_a] == [json.loads(line)["loss"] for line in log_b]
    assert vit_a.keys() == vit_b.keys() and all(torch.equal(vit_a[k], vit_b[k]) for k in vit_a)
