"""Paired dataset: pairs stay right under every transform; condition filters; offset-batched collate;
files damaged after prepare are refused by name."""
from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from collab_distill.cli import user_errors
from collab_distill.config import DataConfig, ImageAug, PointAug
from collab_distill.data.collate import Collate
from collab_distill.data.dataset import DataFileError, PairedDataset, load_points
from collab_distill.data.info_store import store_path, write_info_store
from collab_distill.data.infos import load_infos
from collab_distill.geometry import project_to_pairs


@pytest.fixture(scope="module")
def infos_dir(textured_infos_dir):
    return textured_infos_dir


def _cfg(infos_dir, **kw) -> DataConfig:
    return dataclasses.replace(DataConfig(info_dir=str(infos_dir), split="train", conditions=["all"],
                                          cameras=["all"], image_size=(126, 252)), **kw)


def _sample(image: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear values ``(P, 3)`` of ``image (3, H, W)`` at float pixels ``uv (P, 2)``."""
    h, w = image.shape[-2:]
    grid = torch.stack([(uv[:, 0] + 0.5) / w * 2 - 1, (uv[:, 1] + 0.5) / h * 2 - 1], -1)
    return F.grid_sample(image[None], grid[None, None].float(), align_corners=False)[0, :, 0].T


def _reference_values(infos_dir, info, channel):
    """Pixel values under each point's projection in the original full-size image (point -> value)."""
    cam = info.cameras[channel]
    root = load_infos(infos_dir / "infos_train.json").dataroot
    image = torch.from_numpy(np.asarray(Image.open(root / cam.path).convert("RGB")).copy()).permute(2, 0, 1) / 255
    pts = load_points(root / info.lidar_path, info.num_points)
    pairs = project_to_pairs(pts, cam.lidar2cam, cam.K, (cam.height, cam.width), min_depth=1.0)
    return dict(zip(pairs.point_idx.tolist(), _sample(image, pairs.uv)))


@pytest.mark.parametrize("aug", [
    ImageAug(),                                                      # resize + centre crop
    ImageAug(scale_range=(1.2, 1.6), random_crop=True),               # zoom + random crop
    ImageAug(scale_range=(1.0, 1.3), hflip_prob=1.0, random_crop=True),  # ... + flip
])
def test_value_under_each_pair_survives_image_transforms(infos_dir, aug):
    cfg = _cfg(infos_dir, augment=True, image_aug=aug, point_aug=PointAug())
    ds = PairedDataset(cfg, seed=1)
    item = ds[0]
    for m, channel in enumerate(item["cameras"]):
        ref = _reference_values(infos_dir, ds.samples[0], channel)
        sel = item["pair_image"] == m
        assert sel.sum() > 50
        got = _sample(item["images"][m], item["pair_uv"][sel])
        want = torch.stack([ref[int(p)] for p in item["pair_point"][sel]])
        err = (got - want).abs().mean(1)
        assert err.median() < 0.01 and err.quantile(0.95) < 0.04, (channel, err.median(), err.max())


def test_pairs_survive_3d_augmentation_and_subsampling(infos_dir):
    plain = PairedDataset(_cfg(infos_dir), seed=2)[1]
    cfg = _cfg(infos_dir, augment=True, max_points=2500,
               point_aug=PointAug(rotate_deg=180.0, flip_prob=1.0, scale_range=(0.9, 1.1)))
    item = PairedDataset(cfg, seed=2)[1]
    assert len(item["points"]) == 2500 and len(item["labels"] if item["labels"] is not None else []) in (0, 2500)
    # Each surviving pair refers to the same physical point: map the augmented points back.
    original = plain["points"][:, :3].double()
    aug_points = item["points"][:, :3].double()
    # Recover which original point each subsampled point is (intensity column is unchanged).
    keys = plain["points"][:, 3].tolist()
    counts = {k: keys.count(k) for k in set(keys)} if len(set(keys)) != len(keys) else {}
    src = {k: i for i, k in enumerate(keys) if counts.get(k, 1) == 1}  # unique intensities as keys
    assert len(src) > 0.9 * len(plain["points"])
    # Fit the linear map original -> augmented on matched points: it must be s * (rotation with a flip).
    match = [(i, src[k]) for i, k in enumerate(item["points"][:, 3].tolist()) if k in src]
    a = torch.tensor([j for j, _ in match])
    b = torch.tensor([k for _, k in match])
    m = torch.linalg.lstsq(original[b], aug_points[a]).solution
    scale2 = (m.T @ m).diagonal().mean()
    torch.testing.assert_close(m.T @ m, scale2 * torch.eye(3, dtype=m.dtype), atol=1e-4, rtol=0)
    assert torch.det(m) < 0  # the flip happened
    # Pairs: each augmented pair (point, image, uv) equals the unaugmented pair of that original point.
    plain_pairs = {(int(p), int(i)): uv for p, i, uv in zip(plain["pair_point"], plain["pair_image"], plain["pair_uv"])}
    new_to_old = dict(zip(a.tolist(), b.tolist()))
    checked = 0
    for p, i, uv in zip(item["pair_point"].tolist(), item["pair_image"].tolist(), item["pair_uv"]):
        if p in new_to_old:
            torch.testing.assert_close(uv, plain_pairs[(new_to_old[p], i)])
            checked += 1
    assert checked > 100
    kept_old = set(new_to_old.values())
    assert sum(1 for (p, _) in plain_pairs if p in kept_old) == checked  # no pair lost or invented
    assert len(item["pair_point"]) >= checked


def test_condition_filter_and_camera_selection(infos_dir, tmp_path):
    data = json.loads((infos_dir / "infos_train.json").read_text())
    data["samples"][1]["conditions"] = ["night", "rain"]
    write_info_store(store_path(tmp_path, "train"), data)
    stage1 = PairedDataset(_cfg(tmp_path, conditions=["clear"], cameras=["random"]))
    stage2 = PairedDataset(_cfg(tmp_path, conditions=["all"], cameras=["CAM_BACK", "CAM_FRONT"]))
    assert len(stage1) == 3 and len(stage2) == 4
    assert all("clear" in s.conditions for s in stage1.samples)
    assert stage2[1]["conditions"].tolist() == [False, True, True, False, False]
    assert stage2[0]["cameras"] == ["CAM_BACK", "CAM_FRONT"] and len(stage1[0]["cameras"]) == 1
    picks = set()
    for epoch in range(12):
        stage1.set_epoch(epoch)
        picks.add(stage1[0]["cameras"][0])
    assert len(picks) > 2  # the random camera changes with the epoch
    with pytest.raises(ValueError, match=r"no sample has a condition in \['snow'\] \(the store has \['clear', "
                                         r"'night', 'rain'\]\)"):
        PairedDataset(_cfg(tmp_path, conditions=["snow"]))


def test_items_are_deterministic(infos_dir):
    cfg = _cfg(infos_dir, augment=True, max_points=3000, cameras=["random"],
               image_aug=ImageAug((1.0, 1.5), 0.5, True), point_aug=PointAug(180.0, 0.5, (0.9, 1.1)))
    a, b = PairedDataset(cfg, seed=5)[2], PairedDataset(cfg, seed=5)[2]
    for key in ("points", "images", "pair_point", "pair_uv", "K"):
        assert torch.equal(a[key], b[key])


def test_collate_offsets_and_global_indices(infos_dir):
    ds = PairedDataset(_cfg(infos_dir, cameras=["CAM_FRONT", "CAM_BACK_LEFT"]))
    items = [ds[i] for i in range(3)]
    batch = Collate(voxel_size=0.5)(items)
    assert batch["offsets"].tolist() == np.cumsum([len(it["points"]) for it in items]).tolist()
    assert batch["images"].shape == (6, 3, 126, 252) and batch["image_sample"].tolist() == [0, 0, 1, 1, 2, 2]
    # Every pair's point lies in the sample of its image.
    point_sample = torch.searchsorted(batch["offsets"], batch["pair_point"], right=True)
    assert torch.equal(point_sample, batch["image_sample"][batch["pair_image"]])
    # The global pair rows are the per-item rows shifted by the offsets.
    last = items[2]
    n0 = len(items[0]["points"]) + len(items[1]["points"])
    tail = batch["pair_point"][-len(last["pair_point"]):]
    assert torch.equal(tail, last["pair_point"] + n0)
    assert torch.equal(batch["pair_image"][-len(last["pair_point"]):], last["pair_image"] + 4)
    assert batch["voxel_inverse"].shape == (len(batch["points"]),)
    assert int(batch["voxel_coords"][:, 0].max()) == 2


def test_without_images_no_image_is_opened_and_the_points_are_the_same(infos_dir, monkeypatch):
    """``with_images=False`` (the 3D probe without its agreement metric): no image file is opened, the item
    has no camera and no pair, and its points are those of the item with images."""
    import collab_distill.data.dataset as dataset_module

    cfg = _cfg(infos_dir)
    full = PairedDataset(cfg, seed=3, train=False)[1]
    opened = []
    monkeypatch.setattr(dataset_module, "load_image", lambda *a, **k: opened.append(a[0]))
    bare = PairedDataset(cfg, seed=3, train=False, with_images=False)[1]
    assert opened == [] and bare["cameras"] == [] and len(bare["pair_point"]) == 0 < len(full["pair_point"])
    assert bare["images"].shape == (0, 3, 126, 252) and bare["K"].shape == (0, 3, 3)
    assert torch.equal(bare["points"], full["points"])
    batch = Collate(voxel_size=0.5)([bare, bare])
    assert batch["images"].shape[0] == 0 and batch["offsets"].tolist() == [len(bare["points"]), 2 * len(bare["points"])]


def _on_copy(synthetic_infos, root) -> DataConfig:
    """The synthetic train split, front camera, read from dataroot ``root``."""
    return DataConfig(info_dir=str(synthetic_infos), dataroot=str(root), split="train", conditions=["all"],
                      cameras=["CAM_FRONT"], image_size=(56, 112))


@pytest.mark.parametrize("field, keep_bytes, found", [("lidar_path", 50 * 20, 50), ("lidar_path", 50 * 20 + 7, 50),
                                                      ("lidarseg_path", 50, 50)])
def test_a_file_truncated_after_prepare_is_refused_by_name(damaged_copy, synthetic_infos, field, keep_bytes, found):
    root, path, expected = damaged_copy(field, keep_bytes)
    assert expected > found
    dataset = PairedDataset(_on_copy(synthetic_infos, root), train=False)
    with pytest.raises(DataFileError) as caught:
        dataset[0]
    message = str(caught.value)
    assert str(path) in message and f"{keep_bytes} bytes hold {found} " in message
    assert f"says {expected};" in message and "tools/prepare_nuscenes.py" in message and "\n" not in message
    assert dataset[1]["points"].shape[1] == 5  # the undamaged samples still load


def test_a_damaged_file_read_in_a_dataloader_worker_is_still_one_line(damaged_copy, synthetic_infos, capsys):
    root, path, _ = damaged_copy("lidarseg_path", 10)
    loader = DataLoader(PairedDataset(_on_copy(synthetic_infos, root), train=False), batch_size=1, num_workers=1,
                        collate_fn=lambda b: b)
    with pytest.raises(SystemExit) as caught, user_errors():
        next(iter(loader))
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: 10 bytes hold 10 labels") and err.count("\n") == 1
    with pytest.raises(DataFileError, match="10 labels") as debug, user_errors(debug=True):  # --debug: traceback
        next(iter(loader))
    assert "\n" not in str(debug.value)
    if sys.version_info >= (3, 11):  # exception notes
        assert any("_read_exactly" in note for note in debug.value.__notes__)
