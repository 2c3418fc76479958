"""3D linear probe: the head learns separable features, not random ones; per-condition results; recipe;
a damaged label file is named; the training-point store (round trip, resume, another encoder refused);
batched features; no image decoded without the agreement metric; results against the in-memory path."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from collab_distill.config import load_config
from collab_distill.data.dataset import DataFileError
from collab_distill.data.shards import ShardWriter, begin_build, finish_build, partial_path
from collab_distill.data.taxonomy import IGNORE, LIDARSEG_CLASSES
from collab_distill.models.weights import WeightsError
from collab_distill.probe.lidar import (
    GroupMetrics,
    LidarProbeConfig,
    LidarProbeTrainConfig,
    lidar_result_path,
    lidar_store_path,
    run_lidar_probe,
    train_head,
)
from collab_distill.probe.lidar_store import STORE_VERSION, PointStore, point_fields


def _store(path, features: list[torch.Tensor], labels: list[torch.Tensor]) -> PointStore:
    """A point store of one row per scan (``features (n_i, C)``, ``labels (n_i,)``), written as a build does."""
    folder = partial_path(path)
    begin_build(folder, {"store_version": STORE_VERSION, "rows": len(labels), "processes": 1,
                         "channels": features[0].shape[1]})
    writer = ShardWriter(folder, 0, 1, len(labels), point_fields(features[0].shape[1]))
    writer.write(features=[f.half().numpy() for f in features], labels=[y.numpy().astype(np.uint8) for y in labels])
    writer.commit()
    writer.close()
    finish_build(folder, path)
    return PointStore(path)


def _metrics(head: torch.nn.Module, features: torch.Tensor, labels: torch.Tensor, tags: list[tuple[str, ...]]
             ) -> dict:
    metrics = GroupMetrics()
    with torch.no_grad():
        pred = head(features).argmax(1)
    for scan, part in enumerate(torch.arange(len(labels)).chunk(len(tags))):
        metrics.update(pred[part], labels[part], tags[scan])
    return metrics.result()


def test_head_separates_informative_features_and_not_random_ones(tmp_path):
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, len(LIDARSEG_CLASSES), (4000,), generator=gen)
    informative = torch.nn.functional.one_hot(labels, len(LIDARSEG_CLASSES)).float() * 3
    informative += 0.3 * torch.randn(informative.shape, generator=gen)
    noise = torch.randn(4000, 16, generator=gen)
    val_labels = labels[2000:].clone()
    val_labels[::17] = IGNORE   # unlabelled points are not counted
    cfg = LidarProbeTrainConfig(epochs=25, lr=5e-2, batch_points=700, chunk_scans=2)  # chunks cut across batches
    tags = [("clear",), ("night", "rain")]
    good = _metrics(train_head(_store(tmp_path / "good", list(informative[:2000].chunk(5)), list(labels[:2000].chunk(5))),
                               cfg, progress=False), informative[2000:], val_labels, tags)
    bad = _metrics(train_head(_store(tmp_path / "bad", list(noise[:2000].chunk(5)), list(labels[:2000].chunk(5))),
                              cfg, progress=False), noise[2000:], val_labels, tags)
    assert good["all"]["miou"] > 0.95 and bad["all"]["miou"] < 0.2
    assert set(good) == {"all", "clear", "night", "rain"}
    assert good["night"]["samples"] == good["rain"]["samples"] == 1 and good["all"]["samples"] == 2
    assert good["clear"]["points"] + good["night"]["points"] == good["all"]["points"] == int((val_labels != IGNORE).sum())
    assert good["all"]["stage1_teacher_cosine"] is None


def test_the_head_streams_the_same_points_whatever_the_workers(tmp_path):
    """The seeded chunks make one stream: 0 or 2 DataLoader workers train the same head."""
    gen = torch.Generator().manual_seed(1)
    store = _store(tmp_path / "s", [torch.randn(300, 8, generator=gen) for _ in range(5)],
                   [torch.randint(0, 16, (300,), generator=gen) for _ in range(5)])
    cfg = LidarProbeTrainConfig(epochs=2, batch_points=256, chunk_scans=2)
    a, b = (train_head(store, cfg, seed=3, workers=w, progress=False) for w in (0, 2))
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(x, y)


def _tiny_cfg(synthetic_infos, out, *overrides: str) -> LidarProbeConfig:
    return load_config("configs/probe_lidar/synthetic.yaml", [
        f"data.info_dir={synthetic_infos}", "model.image.name=vit_pico_patch14_cpu", "data.image_size=[56,112]",
        "model.point.enc_widths=[8,16]", "model.point.enc_depths=[1,1]", "model.point.dec_widths=[16,16]",
        "model.point.dec_depths=[1,1]", "model.point.stem_width=8", "train.epochs=3", "data.voxel_size=0.4",
        f"experiment.output_dir={out}", *overrides], schema=LidarProbeConfig)


def test_probe_runs_on_the_synthetic_world(synthetic_infos, tmp_path):
    result = run_lidar_probe(_tiny_cfg(synthetic_infos, tmp_path), progress=False)
    assert result["name"] == "random_init"  # experiment.name empty, no point_weights: the floor
    assert set(result["results"]) == {"all", "night", "rain"}  # the tiny val split is one night+rain scene
    everything = result["results"]["all"]
    assert 0.0 <= everything["miou"] <= 1.0 and everything["points"] > 1000
    assert -1.0 <= everything["stage1_teacher_cosine"] <= 1.0
    assert result["recipe"]["train_samples"] == 2 and result["recipe"]["epochs"] == 3
    assert "predicted-only" in result["recipe"]["miou"]
    assert result["encoder"]["weights"] == "random init (floor)"
    with pytest.raises(WeightsError, match="point_encoder.safetensors not found: point --point-weights"):
        run_lidar_probe(load_config(None, ["point_weights=/nowhere", "model.image.weights=random"],
                                    schema=LidarProbeConfig), progress=False)


def test_sweep_points_are_features_but_not_labelled_points(synthetic_infos, tmp_path):
    """With data.nsweeps=3 the sweeps' points (label IGNORE) reach the encoder; the labelled points are the
    keyframes', as with one sweep."""
    one = run_lidar_probe(_tiny_cfg(synthetic_infos, tmp_path / "one", "train.epochs=1"), progress=False)
    three = run_lidar_probe(_tiny_cfg(synthetic_infos, tmp_path / "three", "train.epochs=1", "data.nsweeps=3"), progress=False)
    assert three["recipe"]["train_points"] == one["recipe"]["train_points"] > 0
    assert three["results"]["all"]["points"] == one["results"]["all"]["points"]


def test_a_label_file_truncated_after_prepare_names_the_file(damaged_copy, synthetic_infos, tmp_path):
    """It used to surface later as an unrelated IndexError (labels indexed by the pairs)."""
    root, path, num_points = damaged_copy("lidarseg_path", 100)
    with pytest.raises(DataFileError, match=re.escape(f"{path}: 100 bytes hold 100 labels, its info record says "
                                                      f"{num_points};")):
        run_lidar_probe(_tiny_cfg(synthetic_infos, tmp_path, f"data.dataroot={root}"), progress=False)


def test_result_path_and_name_follow_the_probe_convention():
    def path(*overrides: str) -> str:
        return str(lidar_result_path(load_config("configs/probe_lidar/synthetic.yaml", list(overrides))))

    assert path() == "runs/probes/random_init/lidar_seg.json"
    assert path("point_weights=runs/demo/seed0/stage1/weights") == "runs/probes/stage1/lidar_seg.json"
    assert path("experiment.name=mine", "experiment.output_dir=out", "point_weights=w") == "out/mine/lidar_seg.json"


def test_report_includes_the_3d_probe_next_to_the_2d_tables(tmp_path):
    from collab_distill.probe.results import write_result
    from collab_distill.report import build_report

    def result(name: str, miou: float, cos: float) -> dict:
        group = {"miou": miou, "accuracy": miou, "points": 100, "samples": 2, "iou": {}, "stage1_teacher_cosine": cos}
        return {"name": name, "task": "lidar_seg", "recipe": {"epochs": 1}, "results": {"all": group, "night": group}}

    write_result(result("stage1", 0.42, 0.81), tmp_path / "probes" / "stage1" / "lidar_seg.json")
    write_result(result("random_init", 0.07, 0.01), tmp_path / "probes" / "random_init" / "lidar_seg.json")
    text = build_report([tmp_path / "probes"], tmp_path / "report")["markdown"].read_text()
    assert "3D linear probe of the LiDAR encoder" in text
    assert "42.0" in text and "7.0" in text and "0.810" in text
    assert text.index("stage1") < text.index("random_init")


def _per_scan(cfg: LidarProbeConfig, split: str) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """Reference: each scan of ``split`` through the encoder alone, as the probe did before batching
    (``features (n, C)`` float32 and evaluation labels ``(n,)`` of every point, and the mean stage-1 /
    teacher cosine of its pairs)."""
    from collab_distill.data.collate import Collate
    from collab_distill.data.dataset import PairedDataset
    from collab_distill.data.voxelize import Voxels
    from collab_distill.losses import cosine_distance
    from collab_distill.models import sample_features
    from collab_distill.probe.lidar import build_stage1
    from collab_distill.probe.lidar_features import eval_labels, split_data

    method, dataset = build_stage1(cfg), PairedDataset(split_data(cfg, split), seed=cfg.experiment.seed, train=False)
    out = []
    with torch.no_grad():
        for i in range(len(dataset)):
            batch = Collate(cfg.data.voxel_size)([dataset[i]])
            features = method.point_encoder(Voxels.from_batch(batch))
            teacher = sample_features(method.teacher_maps(batch), batch["pair_uv"], batch["pair_image"],
                                      method.teacher.patch_size)
            cos = 1 - cosine_distance(method.head(features)[batch["pair_point"]], teacher)
            out.append((features, eval_labels(batch["labels"]), float(cos.mean())))
    return out


def test_batched_features_equal_per_scan_ones(synthetic_infos, tmp_path):
    from collab_distill.data.dataset import PairedDataset
    from collab_distill.probe.lidar import build_stage1
    from collab_distill.probe.lidar_features import encode, scan_batches, scan_slices, split_data

    cfg = _tiny_cfg(synthetic_infos, tmp_path)
    method, dataset = build_stage1(cfg), PairedDataset(split_data(cfg, "train"), train=False, with_images=False)
    [(rows, batch)] = list(scan_batches(dataset, [1, 0], 2, 1, torch.device("cpu")))   # in a worker
    reference = _per_scan(cfg, "train")
    with torch.no_grad():
        features = encode(method, batch, torch.device("cpu"))
    assert rows == [1, 0]
    for row, part in zip(rows, scan_slices(batch["offsets"])):
        torch.testing.assert_close(features[part], reference[row][0], atol=1e-5, rtol=1e-4)


def test_store_round_trip_and_subsample(synthetic_infos, tmp_path):
    """The store holds the labelled points' features (float16 of the per-scan ones) and labels; a seeded
    subsample keeps points_per_scan of them, the same ones on every build."""
    from collab_distill.probe.lidar import build_stage1
    from collab_distill.probe.lidar_features import build_point_store

    cfg = _tiny_cfg(synthetic_infos, tmp_path)
    store = build_point_store(cfg, build_stage1(cfg), tmp_path / "all", progress=False)
    reference = _per_scan(cfg, "train")
    assert store.rows == len(reference) == 2 and store.channels == reference[0][0].shape[1]
    for row, (features, labels, _) in enumerate(reference):
        got_features, got_labels = store.read_points([row])
        labelled = labels != IGNORE
        assert got_features.dtype == np.float16 and torch.equal(torch.from_numpy(got_labels).long(), labels[labelled])
        torch.testing.assert_close(torch.from_numpy(got_features).float(), features[labelled], atol=2e-3, rtol=1e-3)
    assert store.points == sum(int((labels != IGNORE).sum()) for _, labels, _ in reference)
    both = store.read_points([1, 0])
    assert np.array_equal(both[1], np.concatenate([store.read_points([1])[1], store.read_points([0])[1]]))

    sub = _tiny_cfg(synthetic_infos, tmp_path, "train.points_per_scan=100")
    a, b = (build_point_store(sub, build_stage1(sub), tmp_path / name, progress=False) for name in ("a", "b"))
    assert a.points == 200 and a.meta["subsample"]["points_per_scan"] == 100
    assert all(np.array_equal(x, y) for x, y in zip(a.read_points([0, 1]), b.read_points([0, 1])))
    full_rows = [tuple(f) for f in store.read_points([0])[0].tolist()]
    assert {tuple(f) for f in a.read_points([0])[0].tolist()} <= set(full_rows)   # a subset of the labelled points


def test_a_killed_build_resumes_to_the_same_store(synthetic_infos, tmp_path, monkeypatch):
    from collab_distill.probe.lidar import build_stage1
    from collab_distill.probe.lidar_features import build_point_store

    cfg = _tiny_cfg(synthetic_infos, tmp_path, "train.feature_batch=1")
    whole = build_point_store(cfg, build_stage1(cfg), tmp_path / "whole", progress=False)
    write = ShardWriter.write

    def killed_after_one_scan(self, **arrays):
        if self.done:
            raise KeyboardInterrupt
        write(self, **arrays)

    monkeypatch.setattr(ShardWriter, "write", killed_after_one_scan)
    with pytest.raises(KeyboardInterrupt):
        build_point_store(cfg, build_stage1(cfg), tmp_path / "resumed", progress=False, commit_seconds=0)
    assert not (tmp_path / "resumed").exists() and (partial_path(tmp_path / "resumed") / "shard_0.json").is_file()
    monkeypatch.setattr(ShardWriter, "write", write)
    seen = []
    monkeypatch.setattr(ShardWriter, "write", lambda self, **a: (seen.append(self.done), write(self, **a)))
    resumed = build_point_store(cfg, build_stage1(cfg), tmp_path / "resumed", progress=False)
    assert seen == [1]   # only the scan that was not committed
    assert all(np.array_equal(x, y) for x, y in zip(whole.read_points([0, 1]), resumed.read_points([0, 1])))


def test_a_store_of_another_encoder_is_refused_in_one_line(synthetic_infos, tmp_path):
    from collab_distill.probe.lidar import build_stage1
    from collab_distill.probe.lidar_features import build_point_store
    from collab_distill.probe.lidar_store import PointStoreError

    first = _tiny_cfg(synthetic_infos, tmp_path, f"store={tmp_path / 'points'}")
    build_point_store(first, build_stage1(first), lidar_store_path(first), progress=False)
    other = _tiny_cfg(synthetic_infos, tmp_path, f"store={tmp_path / 'points'}", "experiment.seed=1")  # another init
    with pytest.raises(PointStoreError) as refused:
        run_lidar_probe(other, progress=False)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'points'}: encoder.weights_sha256 is ")
    assert "--overwrite" in message
    replaced = build_point_store(other, build_stage1(other), lidar_store_path(other), overwrite=True, progress=False)
    assert replaced.meta["subsample"]["seed"] == 1
    built = (replaced.path / "meta.json").stat().st_mtime_ns
    build_point_store(other, build_stage1(other), lidar_store_path(other), overwrite=True, progress=False)
    assert (replaced.path / "meta.json").stat().st_mtime_ns == built   # a store of this encoder is reused


@pytest.mark.parametrize("agreement", [False, True])
def test_images_are_decoded_only_for_the_agreement_metric(synthetic_infos, tmp_path, monkeypatch, agreement):
    import collab_distill.data.dataset as dataset_module

    opened = []
    load_image = dataset_module.load_image
    monkeypatch.setattr(dataset_module, "load_image", lambda path, *a, **k: (opened.append(path), load_image(
        path, *a, **k))[1])
    from collab_distill.data.dataset import PairedDataset
    from collab_distill.probe.lidar_features import split_data

    cfg = _tiny_cfg(synthetic_infos, tmp_path, f"eval.agreement={str(agreement).lower()}")
    result = run_lidar_probe(cfg, progress=False)
    val = PairedDataset(split_data(cfg, "val"), train=False).samples
    val_images = {val.store.dataroot / cam.path for info in val for cam in info.cameras.values()}
    assert sorted(opened) == (sorted(val_images) if agreement else [])   # never a training image
    assert (result["results"]["all"]["stage1_teacher_cosine"] is None) != agreement


def test_results_equal_the_in_memory_path_within_tolerance(synthetic_infos, tmp_path):
    """The streamed probe against the path it replaces (every training point's float32 features in RAM, one
    permutation of all of them per epoch, evaluation on the whole val tensor): the float16 store and
    another point order move the head a little, so mIoU agrees within 0.02 and each group's point
    count exactly; the agreement cosine (batched teacher and encoder, no head of the probe) within 1e-4."""
    from collab_distill.probe.lidar import new_head

    cfg = _tiny_cfg(synthetic_infos, tmp_path, "train.epochs=10", "train.batch_points=4096")
    result = run_lidar_probe(cfg, progress=False)
    train = _per_scan(cfg, "train")
    x = torch.cat([f for f, _, _ in train])
    y = torch.cat([labels for _, labels, _ in train])
    x, y = x[y != IGNORE], y[y != IGNORE]
    head = new_head(x.shape[1])
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    steps = -(-len(x) // cfg.train.batch_points)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.train.epochs * steps)
    gen = torch.Generator().manual_seed(0)
    for _ in range(cfg.train.epochs):
        for chunk in torch.randperm(len(x), generator=gen).split(cfg.train.batch_points):
            loss = torch.nn.functional.cross_entropy(head(x[chunk]), y[chunk])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    head.eval()
    val = _per_scan(cfg, "val")
    reference = GroupMetrics()
    with torch.no_grad():
        for features, labels, cosine in val:
            reference.update(head(features).argmax(1), labels, ("night", "rain"), cosine)
    expected = reference.result()
    assert result["recipe"]["train_points"] == len(y)
    for group in ("all", "night", "rain"):
        assert result["results"][group]["points"] == expected[group]["points"]
        assert abs(result["results"][group]["miou"] - expected[group]["miou"]) < 0.02, (result["results"], expected)
        assert result["results"][group]["stage1_teacher_cosine"] == pytest.approx(
            expected[group]["stage1_teacher_cosine"], abs=1e-4)
