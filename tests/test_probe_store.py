"""The probe feature store: round trip, resumed builds, identity refusal, sparse targets = dense ones."""
from __future__ import annotations

import dataclasses
from multiprocessing.reduction import ForkingPickler

import pytest
import torch
import torch.nn.functional as F

from collab_distill.config import DataConfig, load_config
from collab_distill.data.corruptions import Corruption
from collab_distill.data.taxonomy import IGNORE
from collab_distill.engine.optim import WarmupCosine
from collab_distill.models import ImageEncoderConfig
from collab_distill.probe.config import ProbeConfig, ProbeHeadConfig, ProbeTrainConfig
from collab_distill.probe.data import NuScenesViews, ProbeView
from collab_distill.probe.encoder import load_encoder, probe_features
from collab_distill.probe.heads import gradient_loss, sig_loss
from collab_distill.probe.metrics import ConfusionMatrix, DepthMetrics
from collab_distill.probe.results import load_result
from collab_distill.probe.run import run_probe
from collab_distill.probe.store import ProbeStore, ProbeStoreError, dense_maps, sparse_targets
from collab_distill.probe.store_build import build_probe_store
from collab_distill.probe.train import DepthTask, SegTask, StoreViews, evaluate, train_head, upsample_to

SIZE = (56, 112)
PICO = ImageEncoderConfig(name="vit_pico_patch14_cpu", weights="random")


def _views(count: int, seed: int = 0) -> list[list[ProbeView]]:
    """``count`` items of two views each: random images, sparse random labels and depths, tags."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(count):
        views = []
        for cam in range(2):
            hit = torch.rand(SIZE, generator=g) < 0.2
            label = torch.where(hit & (torch.rand(SIZE, generator=g) < 0.9),
                                torch.randint(0, 5, SIZE, generator=g), IGNORE).to(torch.uint8)
            depth = torch.where(hit, torch.rand(SIZE, generator=g) * 60 + 1, 0.0)
            views.append(ProbeView(torch.rand(3, *SIZE, generator=g), label, depth,
                                   ("night", "rain") if i % 2 else ("clear",), f"s{i}/CAM_{cam}"))
        items.append(views)
    return items


def _identity(name: str = "pico") -> dict:
    return {"encoder": {"name": name, "image_size": list(SIZE), "blocks": [-2, -1]}, "views": {"set": "random"}}


def _build(views, path, encoder=None, **kwargs) -> ProbeStore:
    encoder = encoder if encoder is not None else load_encoder(PICO, "random", SIZE)
    return build_probe_store(encoder, views, range(len(views)), _identity(), path, ("label", "depth"),
                             progress=False, **kwargs)


def _files(path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_store_round_trip(tmp_path):
    views, encoder = _views(3), load_encoder(PICO, "random", SIZE)
    store = _build(views, tmp_path / "store", encoder, feature_batch=2)
    flat = [v for item in views for v in item]
    assert len(store) == 6 and store.patch_shape == (2 * encoder.embed_dim, 4, 8)
    images = torch.stack([v.image for v in flat])
    patch, cls = probe_features(encoder, images, [-2, -1])
    assert torch.equal(torch.from_numpy(store.fetch("patch", range(6))), patch.half())
    assert torch.equal(torch.from_numpy(store.fetch("cls", range(6))), cls.half())
    normed = load_encoder(dataclasses.replace(PICO, norm=True), "random", SIZE)(images, blocks=[-2, -1])
    for i, view in enumerate(flat):
        assert store.name(i) == view.name and store.tags(i) == view.tags
        pixel, label, depth = store.targets_of(i)
        expected = sparse_targets(view.label, view.depth)
        assert torch.equal(pixel, torch.from_numpy(expected[0]).long()) and len(pixel) > 100
        assert bool((pixel[1:] > pixel[:-1]).all())  # ascending: neighbours are found by searchsorted
        dense_label, dense_depth = dense_maps(pixel, label, depth, SIZE)
        assert torch.equal(dense_label, view.label) and torch.equal(dense_depth, view.depth)
        # the norm applied at read time: the encoder's own normed features, within float16 rounding
        x = store.head_input([i], norm=True, cls_token=True)[0]
        assert x.shape == (4 * encoder.embed_dim, 4, 8)
        torch.testing.assert_close(x[:2 * encoder.embed_dim], torch.cat(normed.patch, 1)[i], atol=1e-2, rtol=1e-2)
    again = ForkingPickler.loads(ForkingPickler.dumps(store))   # what a DataLoader worker gets
    assert torch.equal(again.head_input([5, 0], False, True), store.head_input([5, 0], False, True))


class _Failing(list):
    """A view list that raises at item ``fail_at`` (a build killed there) and counts the items it gave."""

    def __init__(self, items, fail_at: int | None) -> None:
        super().__init__(items)
        self.fail_at, self.loaded = fail_at, []

    def view_counts(self):
        return [len(item) for item in self]   # iterating a list does not call __getitem__

    def __getitem__(self, index):
        if index == self.fail_at:
            raise RuntimeError("killed")
        self.loaded.append(index)
        return super().__getitem__(index)


def test_a_killed_build_resumes_and_gives_the_same_store(tmp_path):
    views = _views(5)
    whole = _build(views, tmp_path / "whole", feature_batch=1)
    killed = _Failing(views, fail_at=3)
    with pytest.raises(RuntimeError, match="killed"):
        _build(killed, tmp_path / "resumed", feature_batch=1, commit_seconds=0.0)
    assert not (tmp_path / "resumed").exists()            # an unfinished build is not a store
    resumed = _Failing(views, fail_at=None)
    store = _build(resumed, tmp_path / "resumed", feature_batch=1)
    assert resumed.loaded == [3, 4]                        # what was committed is not computed again
    assert _files(store.path) == _files(whole.path)


def test_a_corrupted_store_is_the_same_for_a_seed_whatever_the_batching(tmp_path):
    views = _views(3)
    clean = _build(views, tmp_path / "clean", feature_batch=3)
    speckle = Corruption("speckle_noise", 3, seed=0)
    one = _build(views, tmp_path / "one", feature_batch=1, corruption=speckle)
    three = _build(views, tmp_path / "three", feature_batch=3, corruption=speckle)
    torch.testing.assert_close(torch.from_numpy(three.fetch("patch", range(6))),
                               torch.from_numpy(one.fetch("patch", range(6))), atol=2e-3, rtol=1e-3)
    other = _build(views, tmp_path / "other", feature_batch=3, corruption=Corruption("speckle_noise", 3, seed=1))
    patches = {name: torch.from_numpy(s.fetch("patch", range(6))).float() for name, s in
               (("clean", clean), ("three", three), ("other", other))}
    assert (patches["three"] - patches["clean"]).abs().mean() > 0.01  # the corruption reached the encoder
    assert (patches["three"] - patches["other"]).abs().mean() > 0.01  # another seed, other noise
    assert [three.name(i) for i in range(6)] == [clean.name(i) for i in range(6)]
    for i in range(6):                                                 # targets and tags are the clean views'
        assert three.tags(i) == clean.tags(i)
        for a, b in zip(three.targets_of(i), clean.targets_of(i)):
            assert torch.equal(a, b)


def test_a_store_of_another_identity_is_refused_in_one_line(tmp_path):
    store = _build(_views(2), tmp_path / "store")
    with pytest.raises(ProbeStoreError) as info:
        build_probe_store(load_encoder(PICO, "random", SIZE), _views(2), range(2), _identity("other"),
                          tmp_path / "store", ("label", "depth"), progress=False)
    message = str(info.value)
    assert "\n" not in message and "identity encoder.name is \"pico\" in the store, \"other\"" in message
    with pytest.raises(ProbeStoreError, match="identity views.set"):
        store.check({**_identity(), "views": {"set": "another"}})


def test_a_damaged_store_is_refused_in_one_line_and_rebuilt_with_overwrite(tmp_path):
    views = _views(2)
    whole = _files(_build(views, tmp_path / "store").path)
    patch = tmp_path / "store" / "shard_0_patch.float16"
    patch.write_bytes(patch.read_bytes()[:100])
    with pytest.raises(ProbeStoreError) as info:
        _build(views, tmp_path / "store")
    assert "\n" not in str(info.value) and "shard_0_patch.float16: 100 bytes" in str(info.value)
    assert _files(_build(views, tmp_path / "store", overwrite=True).path) == whole


def test_a_probe_refuses_an_explicit_store_of_another_encoder(synthetic_infos, tmp_path):
    def cfg(*overrides):
        return load_config("configs/probe/seg_linear.yaml", [
            f"data.info_dir={synthetic_infos}", "data.image_size=[56,112]", "model.image.name=vit_pico_patch14_cpu",
            "train.iterations=2", f"experiment.output_dir={tmp_path}", "eval.showcase=0", "eval.fidelity=false",
            *overrides], schema=ProbeConfig)

    first = run_probe(cfg(), progress=False)
    train_store = first["recipe"]["store"]["train"]["path"]
    assert len(first["recipe"]["store"]["train"]["meta_sha256"]) == 64
    with pytest.raises(ProbeStoreError) as info:   # seed 1: other random weights
        run_probe(cfg("experiment.seed=1", "experiment.name=seed1", f"store.train={train_store}"), progress=False)
    assert "\n" not in str(info.value) and "identity encoder.seed is 0 in the store, 1 for this run" in str(info.value)


# ---------------------------------------------------------------------------------------------------
# Sparse targets give the losses and metrics of dense maps
# ---------------------------------------------------------------------------------------------------
class _Head(torch.nn.Module):
    """A fixed random 1x1 conv with x2 upsampling: ``(B, C, h, w)`` -> ``(B, K, 2h, 2w)`` (K = 1: squeezed,
    positive: metres)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv, self.out_dim = torch.nn.Conv2d(in_dim, out_dim, 1), out_dim

    def forward(self, x):
        y = upsample_to(self.conv(x), (x.shape[-2] * 2, x.shape[-1] * 2))
        return F.softplus(y[:, 0]) * 20 + 0.5 if self.out_dim == 1 else y


@pytest.fixture(scope="module")
def fixture_store(tmp_path_factory):
    return _build(_views(3, seed=1), tmp_path_factory.mktemp("fixture") / "store")


def _dense(store: ProbeStore, views: list[int]):
    maps = [dense_maps(*store.targets_of(i), SIZE) for i in views]
    return torch.stack([m[0] for m in maps]), torch.stack([m[1] for m in maps])


def test_sparse_losses_equal_the_dense_ones(fixture_store):
    torch.manual_seed(0)
    data = StoreViews(fixture_store, norm=False, cls_token=True)
    index = [4, 0, 3, 1]
    batch = data.collate([data[i] for i in index])
    label, depth = _dense(fixture_store, index)
    seg = SegTask(ProbeHeadConfig(), tuple("abcde"))
    head = _Head(data.in_dim, 5)
    logits = upsample_to(head(batch.features), SIZE).permute(0, 2, 3, 1)
    dense_ce = F.cross_entropy(logits[label != IGNORE], label[label != IGNORE].long())
    torch.testing.assert_close(seg.loss(head, batch), dense_ce, atol=1e-5, rtol=1e-5)
    task = DepthTask(ProbeHeadConfig(max_depth=50.0), gradient_weight=0.5)
    head = _Head(data.in_dim, 1)
    pred = upsample_to(head(batch.features)[:, None], SIZE)[:, 0]
    valid = task.valid(depth)
    assert 0 < int(valid.sum()) < int((depth > 0).sum())   # some depths are beyond max_depth
    dense = sig_loss(pred, depth, valid) + 0.5 * gradient_loss(pred, depth, valid)
    assert float(gradient_loss(pred, depth, valid).detach()) > 0.1
    torch.testing.assert_close(task.loss(head, batch), dense, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_sparse_metrics_equal_the_dense_ones(fixture_store):
    torch.manual_seed(1)
    data = StoreViews(fixture_store, norm=True, cls_token=False)
    for task, head in ((SegTask(ProbeHeadConfig(), tuple("abcde")), _Head(data.in_dim, 5)),
                       (DepthTask(ProbeHeadConfig(max_depth=50.0), 0.5), _Head(data.in_dim, 1))):
        result = evaluate(task, head, data, batch_size=4, progress=False)
        meters = {"all": task.new_meter(), "night": task.new_meter()}
        for i in range(len(fixture_store)):
            features = data[i][0][None]
            label, depth = _dense(fixture_store, [i])
            for group in ("all", "night") if "night" in fixture_store.tags(i) else ("all",):
                if isinstance(task, SegTask):
                    meters[group].update(task.predict(head, features, SIZE), label)
                else:
                    valid = task.valid(depth)
                    meters[group].update(task.predict(head, features, SIZE)[valid], depth[valid])
        for group, meter in meters.items():
            expected = task.summary(meter)
            assert result[group]["images"] == (6 if group == "all" else 2)
            for key, value in expected.items():
                assert result[group][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (group, key)
        assert isinstance(meters["all"], ConfusionMatrix if isinstance(task, SegTask) else DepthMetrics)


# ---------------------------------------------------------------------------------------------------
# The store path equals today's in-RAM path (dense targets, normed float16 features) within tolerance
# ---------------------------------------------------------------------------------------------------
# relative, on the losses of a short run: the seg store holds float16 tokens BEFORE the norm (today's bank
# held them after it), so the normed input differs by float16 rounding (measured 1.5e-6 here); the depth
# losses differ only in summation order. Over a full default run (600/1000 iterations at lr 1e-2/3e-2) the
# differences grow to ~1e-4 in mIoU and ~0.2 % in RMSE (docs/probes.md, "Results against the in-RAM path").
TOLERANCE = 1e-4


def _dense_reference(task, features, label, depth, cfg, seed):
    """Today's loop (before the store): the same seeded batches over in-RAM features and dense maps."""
    torch.manual_seed(seed)
    head = task.build_head(features.shape[1])
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(cfg.warmup, cfg.iterations))
    generator, queue, losses = torch.Generator().manual_seed(seed), torch.empty(0, dtype=torch.long), []
    for _ in range(cfg.iterations):
        if len(queue) < cfg.batch_size:
            queue = torch.cat([queue, torch.randperm(len(features), generator=generator)])
        index, queue = queue[:cfg.batch_size], queue[cfg.batch_size:]
        out = head(features[index].float())
        if isinstance(task, SegTask):
            logits = upsample_to(out, SIZE).permute(0, 2, 3, 1)
            keep = label[index] != IGNORE
            loss = F.cross_entropy(logits[keep], label[index][keep].long())
        else:
            pred, target = upsample_to(out[:, None], SIZE)[:, 0], depth[index]
            valid = task.valid(target)
            loss = sig_loss(pred, target, valid) + task.gradient_weight * gradient_loss(pred, target, valid)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("kind", ["seg", "depth"])
def test_store_training_equals_the_dense_in_ram_path(synthetic_infos, tmp_path, kind):
    views = NuScenesViews(DataConfig(info_dir=str(synthetic_infos), split="train", conditions=["all"],
                                     cameras=["all"], image_size=SIZE))
    flat = [v for i in range(len(views)) for v in views[i]]
    seg = kind == "seg"
    store = build_probe_store(load_encoder(PICO, "random", SIZE), views, range(len(views)),
                              {"encoder": {"image_size": list(SIZE), "blocks": [-1]}}, tmp_path / "s",
                              views.targets, progress=False)
    images = torch.stack([v.image for v in flat])
    if seg:   # today's seg bank: the encoder's normed tokens, in float16
        with torch.no_grad():
            features = load_encoder(dataclasses.replace(PICO, norm=True), "random", SIZE)(images).patch[0].half()
    else:     # today's depth bank: un-normed tokens and CLS (lin.1), in float16
        patch, cls = probe_features(load_encoder(PICO, "random", SIZE), images, [-1])
        features = torch.cat([patch, cls[:, :, None, None].expand(-1, -1, *patch.shape[-2:])], 1).half()
    label, depth = torch.stack([v.label for v in flat]), torch.stack([v.depth for v in flat])
    cfg = ProbeTrainConfig(iterations=12, batch_size=4, lr=1e-2, warmup=2)
    task = SegTask(ProbeHeadConfig(), views.classes) if seg else DepthTask(
        ProbeHeadConfig(norm=False, cls_token=True, upsample=4, batch_norm=False, num_bins=32), 0.5)
    expected = _dense_reference(task, features, label, depth, cfg, seed=0)
    _, log = train_head(task, StoreViews(store, norm=seg, cls_token=not seg), cfg, seed=0, progress=False)
    assert log["loss_first"] == pytest.approx(expected[0], rel=TOLERANCE)
    assert log["loss_last"] == pytest.approx(sum(expected[-10:]) / 10, rel=TOLERANCE)


def test_two_processes_write_one_shard_each_and_only_the_main_one_trains(synthetic_infos, tmp_path, two_cpu_processes):
    """``accelerate launch`` with 2 CPU processes (gloo): one shard per process, the views of one process's
    store (up to float16 rounding: other batch compositions), one result, one summary line."""
    import subprocess
    from pathlib import Path

    launcher, env = two_cpu_processes
    overrides = [f"data.info_dir={synthetic_infos}", "data.image_size=[56,112]", "model.image.name=vit_pico_patch14_cpu",
                 "train.iterations=5", "eval.showcase=0", "eval.fidelity=false"]
    one = run_probe(load_config("configs/probe/seg_linear.yaml", [*overrides, f"experiment.output_dir={tmp_path / 'one'}"],
                                schema=ProbeConfig), progress=False)
    proc = subprocess.run([*launcher, "tools/probe_seg.py", "--out", str(tmp_path / "two"), "--no-progress", *overrides],
                          cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len([line for line in proc.stdout.splitlines() if line.startswith("seg teacher")]) == 1
    two = load_result(tmp_path / "two" / "teacher" / "seg.json")
    for split in ("train", "eval"):
        a, b = ProbeStore(one["recipe"]["store"][split]["path"]), ProbeStore(two["recipe"]["store"][split]["path"])
        assert (a.processes, b.processes, len(b)) == (1, 2, len(a)) and (b.path / "shard_1_patch.float16").is_file()
        views = list(range(len(a)))
        assert [a.name(i) for i in views] == [b.name(i) for i in views]
        torch.testing.assert_close(b.head_input(views, True, True), a.head_input(views, True, True),
                                   atol=2e-2, rtol=1e-2)
        for i in views:
            assert all(torch.equal(x, y) for x, y in zip(a.targets_of(i), b.targets_of(i)))
    assert two["results"]["all"]["images"] == one["results"]["all"]["images"]
    assert two["results"]["all"]["miou"] == pytest.approx(one["results"]["all"]["miou"], abs=1e-3)
