"""Multi-sweep LiDAR: the synthetic world's sweep chain, prepare's sweep records (JSON = store), the
aggregated cloud against the devkit's ``LidarPointCloud.from_file_multisweep``, and the dataset's use of it
(keyframe rows first, pairs and labels on keyframe rows only)."""
from __future__ import annotations

import json
import re
import shutil
import typing
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from collab_distill.config import DataConfig
from collab_distill.data.dataset import DataFileError, PairedDataset, load_labels, load_points
from collab_distill.data.info_store import InfoStore, store_path
from collab_distill.data.infos import MAX_SWEEPS, load_infos
from collab_distill.data.sweeps import MIN_DISTANCE, aggregate_sweeps
from collab_distill.data.taxonomy import CATEGORY_NAMES, IGNORE
from collab_distill.ranges import Range
from data_prep.nuscenes_infos import prepare
from data_prep.synthetic.config import SyntheticConfig

SWEEPS = SyntheticConfig().sweeps_per_keyframe
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def nusc(synthetic_root):
    from nuscenes.nuscenes import NuScenes

    return NuScenes("v1.0-mini", dataroot=str(synthetic_root), verbose=False)


def _infos(synthetic_infos):
    return [info for split in ("train", "val") for info in load_infos(synthetic_infos / f"infos_{split}.json").samples]


def test_world_writes_sweep_chains_like_nuscenes(nusc, synthetic_root):
    """Per scene: keyframe, then SWEEPS non-keyframe sweeps at the 20 Hz ticks before each later keyframe, in
    sweeps/LIDAR_TOP/, one prev/next chain in time order; sweeps belong to the keyframe they precede."""
    assert SWEEPS >= 2  # the devkit comparison below aggregates 3 clouds from distinct sweeps
    for scene in nusc.scene:
        sample = nusc.get("sample", scene["first_sample_token"])
        sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        assert sd["prev"] == "" and sd["is_key_frame"]
        chain = [sd]
        while sd["next"]:
            sd = nusc.get("sample_data", sd["next"])
            chain.append(sd)
        keys = [k for k, sd in enumerate(chain) if sd["is_key_frame"]]
        assert keys == [k * (SWEEPS + 1) for k in range(scene["nbr_samples"])]
        for sd in chain:
            folder = "samples" if sd["is_key_frame"] else "sweeps"
            assert sd["filename"].startswith(f"{folder}/LIDAR_TOP/") and (synthetic_root / sd["filename"]).is_file()
            assert sd["timestamp"] == nusc.get("ego_pose", sd["ego_pose_token"])["timestamp"]
        for before, after in zip(chain, chain[1:]):
            if not after["is_key_frame"] or not before["is_key_frame"]:
                assert after["timestamp"] - before["timestamp"] in ((0.5 - 0.05 * SWEEPS) * 1e6, 50_000)
            if not before["is_key_frame"]:
                assert before["sample_token"] == next(sd for sd in chain[chain.index(before):]
                                                      if sd["is_key_frame"])["sample_token"]
    assert not any(r["sample_data_token"] in {sd["token"] for sd in nusc.sample_data if not sd["is_key_frame"]}
                   for r in nusc.lidarseg)  # no labels on sweeps, as in nuScenes


def test_keyframe_files_do_not_depend_on_the_sweeps(synthetic_root, tmp_path):
    """Sweeps draw from their own random stream: without them the world's keyframe files are byte-identical."""
    from collab_distill.config import load_config
    from data_prep.synthetic.generate import generate

    cfg = load_config(REPO / "configs" / "synthetic" / "tiny.yaml", schema=SyntheticConfig)
    generate(replace(cfg, sweeps_per_keyframe=0), tmp_path / "w", progress=False)
    files = sorted(p.relative_to(tmp_path / "w") for p in (tmp_path / "w").rglob("*")
                   if p.is_file() and p.parts[len((tmp_path / "w").parts)] in ("samples", "lidarseg", "dense"))
    assert len(files) > 40 and not (tmp_path / "w" / "sweeps").exists()
    assert all((tmp_path / "w" / f).read_bytes() == (synthetic_root / f).read_bytes() for f in files)


def test_sweep_records_match_the_devkit_chain_and_the_store(nusc, synthetic_infos):
    """JSON and store carry the same sweeps (bit-exact), nearest first along the devkit's prev chain, at most
    MAX_SWEEPS, with sweep2lidar = the devkit's ref_from_car @ car_from_global @ global_from_car @ car_from_current."""
    from nuscenes.utils.geometry_utils import transform_matrix
    from pyquaternion import Quaternion

    def pose(record, inverse=False):
        return transform_matrix(record["translation"], Quaternion(record["rotation"]), inverse=inverse)

    counts = []
    for split in ("train", "val"):
        json_infos, store = load_infos(synthetic_infos / f"infos_{split}.json"), InfoStore(store_path(synthetic_infos,
                                                                                                      split))
        for i, info in enumerate(json_infos.samples):
            stored = store.sample(i).sweeps
            assert len(stored) == len(info.sweeps)
            for a, b in zip(stored, info.sweeps):
                for field in fields(b):
                    x, y = getattr(a, field.name), getattr(b, field.name)
                    assert type(x) is type(y) and (np.array_equal(x, y) if isinstance(y, np.ndarray) else x == y)
            ref = nusc.get("sample_data", nusc.get("sample", info.token)["data"]["LIDAR_TOP"])
            ref_from_car = pose(nusc.get("calibrated_sensor", ref["calibrated_sensor_token"]), inverse=True)
            car_from_global = pose(nusc.get("ego_pose", ref["ego_pose_token"]), inverse=True)
            sd = ref
            for sweep in info.sweeps:
                sd = nusc.get("sample_data", sd["prev"])
                want = ref_from_car @ car_from_global @ pose(nusc.get("ego_pose", sd["ego_pose_token"])) @ \
                    pose(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]))
                assert (sweep.path, sweep.timestamp) == (sd["filename"], sd["timestamp"])
                np.testing.assert_allclose(sweep.sweep2lidar, want, atol=1e-9)
            assert sd["prev"] == "" or len(info.sweeps) == MAX_SWEEPS
            counts.append(len(info.sweeps))
    assert sorted(set(counts)) == [0, SWEEPS + 1]  # first keyframes: none; second: its sweeps and keyframe 0


@pytest.mark.parametrize("nsweeps", [3, 10])
def test_aggregated_cloud_equals_the_devkits_multisweep(nusc, synthetic_root, synthetic_infos, nsweeps):
    """Same points in the same order, x, y, z and intensity within float32 rounding of a float64 transform,
    Δt = the devkit's times; the one difference: the devkit also drops the keyframe's close points."""
    from nuscenes.utils.data_classes import LidarPointCloud

    compared = 0
    for info in _infos(synthetic_infos):
        points, keyframe = aggregate_sweeps(synthetic_root, info, nsweeps)
        want, times = LidarPointCloud.from_file_multisweep(nusc, nusc.get("sample", info.token), "LIDAR_TOP",
                                                           "LIDAR_TOP", nsweeps=nsweeps, min_distance=MIN_DISTANCE)
        close = (points[:keyframe, :2].abs() < MIN_DISTANCE).all(dim=1)
        kept = torch.cat([~close, torch.ones(len(points) - keyframe, dtype=torch.bool)])
        got = points[kept].double().numpy()
        assert got.shape == (want.points.shape[1], 5)
        np.testing.assert_allclose(got[:, :3], want.points[:3].T, atol=2e-5, rtol=0)
        np.testing.assert_allclose(got[:, 3] * 255, want.points[3], atol=1e-4, rtol=0)
        np.testing.assert_allclose(got[:, 4], times[0], atol=1e-6, rtol=0)
        assert (points[:, 4] >= 0).all() and (points[:keyframe, 4] == 0).all()
        compared += len(info.sweeps[:nsweeps - 1]) > 0
    assert compared == 2  # the second keyframe of each scene has sweeps


def test_one_sweep_is_the_keyframe_with_zero_time_lag(synthetic_root, synthetic_infos):
    for info in _infos(synthetic_infos):
        points, keyframe = aggregate_sweeps(synthetic_root, info, 1)
        assert keyframe == info.num_points == len(points) and points.dtype == torch.float32
        assert torch.equal(points[:, :4], load_points(synthetic_root / info.lidar_path, info.num_points))
        assert torch.equal(points[:, 4], torch.zeros(len(points)))


def test_sweeps_are_motion_compensated(synthetic_root, synthetic_infos):
    """Trees stand still: the keyframe's vegetation points within 25 m have a point of each sweep mapped by
    sweep2lidar next to them, and not of the same sweep left in its own frame (the ego moved in between)."""
    vegetation = CATEGORY_NAMES.index("static.vegetation")
    for info in (info for info in _infos(synthetic_infos) if info.sweeps):
        keyframe = load_points(synthetic_root / info.lidar_path, info.num_points)[:, :3].numpy()
        labels = load_labels(synthetic_root / info.lidarseg_path, info.num_points).numpy()
        trees = keyframe[(labels == vegetation) & (np.linalg.norm(keyframe, axis=1) < 25)]
        assert len(trees) > 100
        for sweep in info.sweeps[:SWEEPS]:
            raw = load_points(synthetic_root / sweep.path, sweep.num_points)[:, :3].numpy()
            mapped = raw @ sweep.sweep2lidar[:3, :3].T + sweep.sweep2lidar[:3, 3]
            compensated, left = (float(np.median(cKDTree(cloud).query(trees)[0])) for cloud in (mapped, raw))
            assert compensated < 0.1 and left > 3 * compensated, (sweep.path, compensated, left)


def test_dataset_pairs_and_labels_only_keyframe_points(synthetic_infos):
    base = DataConfig(info_dir=str(synthetic_infos), split="val", conditions=["all"], cameras=["all"],
                      image_size=(63, 112))
    one, three = PairedDataset(base, train=False), PairedDataset(replace(base, nsweeps=3), train=False)
    index = next(i for i, info in enumerate(three.samples) if info.sweeps)
    a, b = one[index], three[index]
    keyframe = len(a["points"])
    assert len(b["points"]) > keyframe and b["points"].shape[1] == a["points"].shape[1] == 5
    assert torch.equal(b["points"][:keyframe], a["points"])
    assert (b["points"][keyframe:, 4] > 0).all()
    for key in ("pair_point", "pair_image", "pair_uv", "pair_depth"):
        assert torch.equal(a[key], b[key]), key
    assert len(b["pair_point"]) and int(b["pair_point"].max()) < keyframe
    info = three.samples[index]
    assert torch.equal(b["labels"][:keyframe], load_labels(three.root / info.lidarseg_path, info.num_points))
    assert (b["labels"][keyframe:] == IGNORE).all() and len(b["labels"]) == len(b["points"])


def test_a_sweep_file_changed_after_prepare_is_refused_by_name(synthetic_root, synthetic_infos, tmp_path):
    info = next(info for info in _infos(synthetic_infos) if info.sweeps)
    root = tmp_path / "root"
    shutil.copytree(synthetic_root / "samples" / "LIDAR_TOP", root / "samples" / "LIDAR_TOP")
    shutil.copytree(synthetic_root / "sweeps", root / "sweeps")
    path = root / info.sweeps[0].path
    path.write_bytes(path.read_bytes()[:20 * 100])
    aggregate_sweeps(root, info, 1)  # the keyframe alone does not read it
    with pytest.raises(DataFileError, match=re.escape(f"{path}: 2000 bytes hold 100 points, its info record says "
                                                      f"{info.sweeps[0].num_points};")):
        aggregate_sweeps(root, info, 2)


def test_prepare_stops_the_chain_at_a_missing_sweep(synthetic_root, synthetic_infos, tmp_path):
    """A missing sweep file is a listed problem that shortens the keyframe's sweeps; the keyframe stays."""
    root = tmp_path / "nuscenes"
    shutil.copytree(synthetic_root, root, ignore=shutil.ignore_patterns("paired_clear", "dense"))
    info = next(info for info in load_infos(synthetic_infos / "infos_train.json").samples if info.sweeps)
    (root / info.sweeps[1].path).unlink()
    summary = prepare(root, "v1.0-mini", tmp_path / "infos", workers=1, progress=False)
    assert summary.problems == [f"{info.sweeps[1].path}: missing"] and summary.totals["train"] == 2
    again = next(s for s in load_infos(tmp_path / "infos" / "infos_train.json").samples if s.token == info.token)
    assert [s.path for s in again.sweeps] == [info.sweeps[0].path]
    part = next((tmp_path / "infos" / "parts" / "train").glob("*.json"))
    assert json.loads(part.read_text())["schema_version"] == 2


def test_nsweeps_range_is_what_prepare_records():
    hint = typing.get_type_hints(DataConfig, include_extras=True)["nsweeps"]
    (bounds,) = [m for m in hint.__metadata__ if isinstance(m, Range)]
    assert (bounds.ge, bounds.le) == (1, MAX_SWEEPS + 1) and DataConfig().nsweeps == 1
