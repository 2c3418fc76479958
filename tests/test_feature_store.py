"""The teacher-feature store: bit-exact round trip, a killed build resumes to the same store, another
teacher, image size or an unfinished build is refused in one line, stage 1 from the store gives the live
teacher's loss, and the dataset in store mode opens no image."""
from __future__ import annotations

import os
import subprocess
import sys
from multiprocessing.reduction import ForkingPickler  # how DataLoader sends a dataset to spawn workers
from pathlib import Path

import numpy as np
import pytest
import torch

from collab_distill.config import ConfigError, RunConfig, load_config
from collab_distill.data.collate import Collate
from collab_distill.data.dataset import PairedDataset
from collab_distill.data.feature_store import INDEX_FILE, FeatureStore, FeatureStoreError, teacher_fields
from collab_distill.data.shards import ShardWriter, begin_build, finish_build, partial_path
from collab_distill.engine import teacher_store
from collab_distill.engine.teacher_store import build_teacher_store
from collab_distill.methods.registry import build_method

REPO = Path(__file__).resolve().parents[1]
SMALL = ["model.image.name=vit_pico_patch14_cpu", "data.image_size=[56,112]", "data.max_points=1500",
         "data.cameras=[all]", "model.point.stem_width=8", "model.point.enc_widths=[8,16]",
         "model.point.enc_depths=[1,1]", "model.point.dec_widths=[16,16]", "model.point.dec_depths=[1,1]",
         "data.voxel_size=0.5", "data.conditions=[all]"]


def _cfg(infos_dir: Path, *extra: str) -> RunConfig:
    return load_config("configs/stage1/synthetic.yaml", [f"data.info_dir={infos_dir}", *SMALL, *extra])


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "meta.json"}


@pytest.fixture(scope="module")
def store(textured_infos_dir, tmp_path_factory) -> Path:
    """A store of the pico teacher (random weights, seed 0) over the 4 textured samples x 6 cameras."""
    return build_teacher_store(_cfg(textured_infos_dir), tmp_path_factory.mktemp("store") / "s", batch_size=5,
                               progress=False)


def test_round_trip_is_bit_exact_across_shards(tmp_path):
    rng = np.random.default_rng(0)
    rows, shape = 7, (4, 2, 3)
    maps = rng.standard_normal((rows, *shape)).astype(np.float16)
    maps[0, 0, 0, 0], maps[1, 0, 0, 0] = np.float16(65504), np.float16(-6e-8)  # largest, subnormal
    ks = rng.standard_normal((rows, 3, 3))
    index = np.full((5, 2), -1, dtype=np.int64)
    index[[0, 0, 1, 3, 3, 4, 4], [0, 1, 1, 0, 1, 0, 1]] = np.arange(rows)
    folder, final = partial_path(tmp_path / "st"), tmp_path / "st"
    meta = {"store_version": 1, "teacher": {}, "data": {"cameras": ["A", "B"], "conditions": ["all"]}, "rows": rows,
            "processes": 2, "map_shape": list(shape)}
    begin_build(folder, meta, {INDEX_FILE: index})
    for rank in (0, 1):  # two processes, rows dealt round-robin
        writer = ShardWriter(folder, rank, 2, rows, teacher_fields(shape))
        writer.write(maps=maps[rank::2], K=ks[rank::2])
        writer.commit()
    finish_build(folder, final)
    loaded = ForkingPickler.loads(ForkingPickler.dumps(FeatureStore(final)))  # pickles by path
    for sample, slots in ((0, [0, 1]), (1, [1]), (3, [1, 0]), (4, [0, 1])):
        rows_of = index[sample, slots]
        got = loaded.maps(sample, slots)
        assert got.dtype == np.float16 and got.tobytes() == maps[rows_of].tobytes()
        assert np.array_equal(loaded.intrinsics(sample, slots), ks[rows_of])
    with pytest.raises(FeatureStoreError, match=r"sample 2 of the info store has no stored map for \['A'\]"):
        loaded.maps(2, [0])


def test_killed_build_resumes_to_the_same_store(store, textured_infos_dir, tmp_path, monkeypatch):
    cfg, out = _cfg(textured_infos_dir), tmp_path / "s"
    real = teacher_store.StoreImages.__getitem__
    served = []

    def dies_at_item_13(self, i):
        served.append(i)
        if len(served) == 13:
            raise KeyboardInterrupt  # a kill in the middle of the fourth batch
        return real(self, i)

    monkeypatch.setattr(teacher_store.StoreImages, "__getitem__", dies_at_item_13)
    with pytest.raises(KeyboardInterrupt):
        build_teacher_store(cfg, out, batch_size=4, progress=False, commit_seconds=0)
    assert not out.exists()
    with pytest.raises(FeatureStoreError, match="incomplete teacher-feature store"):
        FeatureStore(partial_path(out))
    assert (partial_path(out) / "shard_0.json").read_text().count('"rows": 12')  # three batches committed
    served.clear()
    monkeypatch.setattr(teacher_store.StoreImages, "__getitem__", lambda self, i: served.append(i) or real(self, i))
    build_teacher_store(cfg, out, batch_size=4, progress=False, commit_seconds=0)
    assert len(served) == 12  # the rows done before the kill are not computed again
    assert _files(out) == _files(store) and not partial_path(out).exists()
    resumed = FeatureStore(out)
    assert resumed.rows == 24 and resumed.map_shape == (64, 4, 8)
    with pytest.raises(FeatureStoreError, match="is a teacher-feature store; use --overwrite"):
        build_teacher_store(cfg, out, progress=False)


def test_another_teacher_or_image_size_is_refused_in_one_line(store, textured_infos_dir, tmp_path):
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    torch.manual_seed(1)
    save_file(build_method(_cfg(textured_infos_dir)).teacher.vit.state_dict(), other)
    with pytest.raises(FeatureStoreError) as err:
        build_method(_cfg(textured_infos_dir, f"method.teacher_store={store}", f"model.image.weights={other}"))
    assert "teacher weights_sha256 is" in str(err.value) and "tools/cache_teacher.py" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(FeatureStoreError, match=r"teacher image_size is \[56, 112\] in the store, \[70, 140\] for"):
        PairedDataset(_cfg(textured_infos_dir, "data.image_size=[70,140]").data, teacher_store=store)
    with pytest.raises(FeatureStoreError, match=r"teacher architecture is \"vit_pico_patch14_cpu\" in the store"):
        build_method(_cfg(textured_infos_dir, f"method.teacher_store={store}", "model.image.name=vit_tiny_patch14_cpu"))
    code = subprocess.run([sys.executable, "tools/cache_teacher.py", "--config", "configs/stage1/synthetic.yaml",
                           f"data.info_dir={textured_infos_dir}", *SMALL, "--out", str(store)],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert code.returncode == 2 and code.stderr.strip().count("\n") == 0, code.stderr
    assert code.stderr.startswith(f"error: {store} is a teacher-feature store; use --overwrite")


def test_an_incomplete_or_damaged_store_is_refused(store, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    with open(copy / "shard_0.f16", "r+b") as f:
        f.truncate(100)
    with pytest.raises(FeatureStoreError, match=r"shard_0\.f16: 100 bytes, expected"):
        FeatureStore(copy)
    with pytest.raises(FeatureStoreError, match=r"nowhere/meta\.json: teacher-feature store not found; build"):
        FeatureStore(tmp_path / "nowhere")


def test_stage1_from_the_store_gives_the_live_teachers_loss(store, textured_infos_dir):
    live_cfg = _cfg(textured_infos_dir, "data.augment=false")
    stored_cfg = _cfg(textured_infos_dir, "data.augment=false", f"method.teacher_store={store}")
    batches, losses = {}, {}
    for name, cfg in (("live", live_cfg), ("store", stored_cfg)):
        dataset = PairedDataset(cfg.data, seed=0, teacher_store=cfg.method.teacher_store)
        batches[name] = Collate(cfg.data.voxel_size)([dataset[(0, 0)], dataset[(3, 0)]])
        torch.manual_seed(0)
        method = build_method(cfg).train(False)
        with torch.no_grad():
            losses[name] = float(method(batches[name]).loss)
    live, stored = batches["live"], batches["store"]
    assert "images" not in stored and stored["teacher_maps"].dtype == torch.float16
    assert stored["teacher_maps"].shape == (12, 64, 4, 8) and len(stored["pair_uv"]) > 500
    for key in ("points", "pair_uv", "pair_point", "pair_image", "K"):
        assert torch.equal(live[key], stored[key]), key
    assert losses["store"] == pytest.approx(losses["live"], rel=2e-3, abs=1e-4)
    assert method.teacher is None  # the store's run holds no teacher


def test_store_mode_opens_no_image_and_keeps_the_3d_augmentation(store, textured_infos_dir, monkeypatch):
    import PIL.Image

    def no_images(*args, **kwargs):
        raise AssertionError(f"an image was opened: {args}")

    monkeypatch.setattr(PIL.Image, "open", no_images)
    cfg = _cfg(textured_infos_dir, "data.max_points=0")  # data.augment=true: the shipped 3D augmentation
    augmented = PairedDataset(cfg.data, seed=0, teacher_store=store)[0]
    plain = PairedDataset(_cfg(textured_infos_dir, "data.max_points=0", "data.augment=false").data, seed=0,
                          teacher_store=store)[0]
    assert "images" not in augmented and augmented["teacher_maps"].shape == (6, 64, 4, 8)
    assert torch.equal(augmented["pair_uv"], plain["pair_uv"])              # pairs from the stored K
    assert not torch.allclose(augmented["points"][:, :3], plain["points"][:, :3])  # rotated, flipped, scaled
    scale = augmented["points"][:, :3].norm(dim=1) / plain["points"][:, :3].norm(dim=1)
    assert 0.9 <= float(scale.mean()) <= 1.1 and float(scale.std()) < 1e-4
    with pytest.raises(ConfigError, match=r"data\.image_aug=.* with method\.teacher_store="):
        PairedDataset(_cfg(textured_infos_dir, "data.image_aug.hflip_prob=0.5").data, teacher_store=store)


@pytest.mark.slow
def test_two_processes_write_one_shard_each_and_give_the_same_maps(store, textured_infos_dir, tmp_path,
                                                                   two_cpu_processes):
    """``accelerate launch`` with 2 CPU processes (gloo): rows dealt round-robin, one shard per process,
    the same maps as one process (up to float16 rounding: the teacher ran on other batch compositions)."""
    launcher, env = two_cpu_processes
    out = tmp_path / "two"
    proc = subprocess.run([*launcher, "tools/cache_teacher.py", "--config", "configs/stage1/synthetic.yaml",
                           f"data.info_dir={textured_infos_dir}", *SMALL, "--out", str(out), "--batch-size", "5",
                           "--no-progress"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = FeatureStore(store), FeatureStore(out)
    assert (two.processes, two.rows) == (2, one.rows) and {p.name for p in out.glob("shard_*.f16")} == {
        "shard_0.f16", "shard_1.f16"}
    assert np.array_equal(one.index, two.index)
    for sample in range(4):
        slots = list(range(6))
        np.testing.assert_allclose(two.maps(sample, slots).astype(np.float32), one.maps(sample, slots).astype(np.float32),
                                   rtol=1e-2, atol=2e-3)
        assert np.array_equal(two.intrinsics(sample, slots), one.intrinsics(sample, slots))


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs /proc/self/maps (Linux)")
def test_reading_every_row_maps_no_file_of_the_store(store):
    features = FeatureStore(store)
    index = features.index
    for sample in range(len(index)):
        slots = [s for s in range(index.shape[1]) if index[sample, s] >= 0]
        assert features.maps(sample, slots).shape == (len(slots), *features.map_shape)
        assert features.intrinsics(sample, slots).shape == (len(slots), 3, 3)
    prefix = f"{Path(store).resolve()}/"
    assert [line for line in Path("/proc/self/maps").read_text().splitlines() if prefix in line] == []
    features.close()
