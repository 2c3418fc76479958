"""Probes on the tiny synthetic set: ground truth from projected LiDAR, fidelity, learning, the
per-condition split, a whole run with its recipe, encoder files, the folder dataset."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from collab_distill.cli import probe_main
from collab_distill.config import DataConfig, load_config
from collab_distill.data.taxonomy import IGNORE
from collab_distill.models import ImageEncoder, ImageEncoderConfig, WeightsError
from collab_distill.paths import ExistingOutputError
from collab_distill.probe.config import FolderConfig, ProbeConfig, ProbeError, ProbeHeadConfig, ProbeTrainConfig
from collab_distill.probe.data import (
    FolderViews,
    NuScenesViews,
    ProbeView,
    collate_views,
    load_target_png,
    rasterize_points,
)
from collab_distill.probe.encoder import load_encoder
from collab_distill.probe.fidelity import feature_fidelity
from collab_distill.probe.metrics import ConfusionMatrix
from collab_distill.probe.results import load_result
from collab_distill.probe.run import probe_name, run_probe
from collab_distill.probe.store import ProbeStore
from collab_distill.probe.store_build import build_probe_store
from collab_distill.probe.train import DepthTask, SegTask, StoreViews, evaluate, train_head
from data_prep.synthetic.taxonomy import fine_to_coarse_lut

SIZE = (112, 224)
PICO = ImageEncoderConfig(name="vit_pico_patch14_cpu", weights="random")


def _data(infos, split="train") -> DataConfig:
    return DataConfig(info_dir=str(infos), split=split, conditions=["all"], cameras=["all"], image_size=SIZE)


def _loader(views) -> DataLoader:
    return DataLoader(views, batch_size=2, collate_fn=collate_views)


@pytest.fixture(scope="module")
def train_views(synthetic_infos):
    return NuScenesViews(_data(synthetic_infos), with_reference=True)


def _store(encoder, views, path, name="pico"):
    """A probe store of ``views`` (a view dataset or a list of lists of views) at ``path``."""
    identity = {"encoder": {"name": name, "image_size": list(SIZE), "blocks": [-1]}, "views": {"n": len(views)}}
    return build_probe_store(encoder, views, range(len(views)), identity, path, ("label", "depth"), progress=False)


@pytest.fixture(scope="module")
def seg_store(train_views, tmp_path_factory):
    return _store(load_encoder(PICO, "random", SIZE), train_views, tmp_path_factory.mktemp("seg_store") / "store")


def test_rasterize_keeps_the_nearest_point_per_pixel():
    uv = torch.tensor([[3.2, 1.9], [2.8, 2.1], [0.0, 0.0], [3.0, 2.0]])
    label, depth = rasterize_points(uv, torch.tensor([0, 0, 0, 1]), torch.tensor([9.0, 4.0, 2.0, 7.0]),
                                    torch.tensor([1, 2, 3, 4]), num_images=2, size=(4, 5))
    assert depth[0, 2, 3] == 4.0 and label[0, 2, 3] == 2      # two points in pixel (2, 3): the nearer wins
    assert depth[0, 0, 0] == 2.0 and label[0, 0, 0] == 3
    assert depth[1, 2, 3] == 7.0 and label[1, 2, 3] == 4      # same pixel, other image
    assert int((depth > 0).sum()) == 3 and int((label != IGNORE).sum()) == 3


def test_projected_ground_truth_agrees_with_dense_render_maps(train_views, synthetic_root):
    lut = np.where(fine_to_coarse_lut() == 0, IGNORE, fine_to_coarse_lut().astype(np.int64) - 1)
    lut = np.append(lut, [IGNORE] * (256 - len(lut)))          # 255 = sky in the dense maps
    agree, total, depth_ok, depth_total = 0, 0, 0, 0
    for views in (train_views[0], train_views[1]):
        for view in views:
            token, camera = view.name.split("/")
            dense_class = lut[load_target_png(synthetic_root / "dense" / token / f"{camera}_class.png", SIZE)]
            dense_depth = load_target_png(synthetic_root / "dense" / token / f"{camera}_depth.png", SIZE) / 100.0
            label = view.label.numpy()
            known = label != IGNORE
            agree += int((label[known] == dense_class[known]).sum())
            total += int(known.sum())
            hit = view.depth.numpy() > 0
            rel = np.abs(view.depth.numpy()[hit] - dense_depth[hit]) / dense_depth[hit].clip(1e-3)
            depth_ok += int((rel < 0.05).sum())
            depth_total += int(hit.sum())
    assert total > 1000 and depth_total > 1000
    assert agree / total > 0.9, agree / total
    assert depth_ok / depth_total > 0.85, depth_ok / depth_total


def test_fidelity_is_one_for_the_teacher_on_its_own_clear_view_and_lower_on_adverse(train_views, synthetic_infos):
    teacher = load_encoder(PICO, "random", SIZE)
    clear = feature_fidelity(teacher, teacher, _loader(train_views), progress=False)
    assert clear["clear"]["images"] == 12 and clear["all"]["images"] == 12
    assert clear["clear"]["patch_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert clear["clear"]["cls_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert clear["night"]["images"] == 0 and clear["night"]["patch_cosine"] is None
    adverse = feature_fidelity(teacher, teacher, _loader(NuScenesViews(_data(synthetic_infos, "val"),
                                                                       with_reference=True)), progress=False)
    assert adverse["night"]["images"] == adverse["rain"]["images"] == 12
    assert adverse["night"]["patch_cosine"] < 0.99  # a night+rain image is not its clear render


def _train_miou(store, classes, iterations=60) -> float:
    task, views = SegTask(ProbeHeadConfig(), classes), StoreViews(store, norm=True, cls_token=False)
    head, _ = train_head(task, views, ProbeTrainConfig(iterations=iterations, batch_size=4, warmup=10, lr=3e-2),
                         seed=0, progress=False)
    return evaluate(task, head, views, progress=False)["all"]["miou"]


class _NoiseEncoder(torch.nn.Module):
    """Wraps an encoder and returns seeded noise of its shapes instead of its features."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder, self.generator = encoder, torch.Generator().manual_seed(0)

    def forward(self, images, blocks):
        out = self.encoder(images, blocks=blocks)
        return dataclasses.replace(out, patch=[torch.randn(p.shape, generator=self.generator) for p in out.patch])


def test_seg_probe_learns_from_features_and_not_from_noise(seg_store, train_views, tmp_path):
    classes = train_views.classes
    informative = _train_miou(seg_store, classes)
    noise = _store(_NoiseEncoder(load_encoder(PICO, "random", SIZE)), train_views, tmp_path / "noise")
    uninformative = _train_miou(noise, classes)
    labels = torch.cat([seg_store.targets_of(i)[1] for i in range(len(seg_store))])
    labels = labels[labels != IGNORE]
    constant = ConfusionMatrix(len(classes))
    constant.update(torch.full_like(labels, int(torch.bincount(labels, minlength=len(classes)).argmax())), labels)
    assert informative > constant.miou() + 0.1, (informative, constant.miou())
    assert informative > uninformative + 0.05, (informative, uninformative)


class _ConstantDepth(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], *x.shape[-2:]), 10.0)


def test_results_are_split_per_condition_tag(tmp_path):
    views = [[ProbeView(torch.zeros(3, *SIZE), None, torch.full(SIZE, d), tags, name)]
             for d, tags, name in ((10.0, ("clear",), "a"), (5.0, ("night", "rain"), "b"), (20.0, ("fog",), "c"))]
    store = _store(load_encoder(PICO, "random", SIZE), views, tmp_path / "store")
    task = DepthTask(ProbeHeadConfig(min_depth=0.001, max_depth=80.0), gradient_weight=0.5)
    res = evaluate(task, _ConstantDepth(), StoreViews(store, False, False), batch_size=2, progress=False)
    assert list(res) == ["clear", "night", "rain", "fog", "snow", "all"]
    assert res["clear"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert res["night"]["abs_rel"] == res["rain"]["abs_rel"] == pytest.approx(1.0)
    assert res["fog"]["abs_rel"] == pytest.approx(0.5) and res["all"]["abs_rel"] == pytest.approx(0.5)
    assert res["snow"] == {"images": 0, "pixels": 0, "rmse": None, "abs_rel": None, "delta1": None,
                           "delta2": None, "delta3": None}
    assert res["all"]["images"] == 3 and res["night"]["images"] == 1


def _tiny_cfg(synthetic_infos, tmp_path, *overrides: str) -> ProbeConfig:
    return load_config("configs/probe/seg_linear.yaml", [
        f"data.info_dir={synthetic_infos}", "data.image_size=[56,112]", "model.image.name=vit_pico_patch14_cpu",
        "train.iterations=10", f"experiment.output_dir={tmp_path}", "eval.showcase=1", *overrides],
        schema=ProbeConfig)


@pytest.mark.parametrize("task", ["seg", "depth"])
def test_probe_run_writes_metrics_per_condition_and_the_recipe(synthetic_infos, tmp_path, task):
    extra = ["task=depth", "head.norm=false", "head.cls_token=true", "head.upsample=4", "head.batch_norm=false",
             "head.num_bins=64", "eval.fidelity=false"] if task == "depth" else []
    cfg = _tiny_cfg(synthetic_infos, tmp_path, *extra)
    result = run_probe(cfg, progress=False)
    saved = load_result(tmp_path / "teacher" / f"{task}.json")
    assert saved["results"] == json.loads(json.dumps(result["results"]))
    assert saved["protocol"] == ("linear" if task == "seg" else "lin.1")
    recipe = saved["recipe"]
    for key in ("image_size", "iterations", "batch_size", "lr", "seed", "blocks", "train_images", "eval_images"):
        assert key in recipe
    assert recipe["image_size"] == [56, 112] and recipe["iterations"] == 10 and recipe["train_images"] == 12
    assert ("miou" in recipe) == (task == "seg")  # the mIoU convention is part of the recipe
    before = (tmp_path / "teacher" / f"{task}.json").read_bytes()
    with pytest.raises(ExistingOutputError, match=rf"{task}.json exists.*--overwrite"):
        run_probe(cfg, progress=False)  # a finished result is never replaced unasked
    assert (tmp_path / "teacher" / f"{task}.json").read_bytes() == before
    assert saved["encoder"]["weights"] == "random" and saved["config"]["task"] == task
    res = saved["results"]
    assert res["night"]["images"] == res["rain"]["images"] == res["all"]["images"] == 12
    assert res["clear"]["images"] == 0
    assert ("fidelity" in saved) == (task == "seg")
    assert (tmp_path / "teacher" / saved["showcase"]).is_file()
    assert load_config(tmp_path / "teacher" / f"{task}_config.yaml", schema=ProbeConfig) == cfg


def test_seg_and_depth_probes_share_one_store_built_once(synthetic_infos, tmp_path, monkeypatch):
    from collab_distill.probe import stores

    built = []
    real = stores.build_probe_store
    monkeypatch.setattr(stores, "build_probe_store", lambda *args, **kwargs: built.append(args[4]) or real(*args,
                                                                                                           **kwargs))
    seg = run_probe(_tiny_cfg(synthetic_infos, tmp_path), progress=False)
    assert len(built) == 2  # the training and the evaluation views
    run_probe(_tiny_cfg(synthetic_infos, tmp_path, "task=depth", "head.norm=false", "head.cls_token=true",
                        "head.upsample=4", "head.batch_norm=false", "head.num_bins=64", "eval.fidelity=false"),
              progress=False)
    again = run_probe(_tiny_cfg(synthetic_infos, tmp_path, "experiment.name=again"), progress=False)
    assert len(built) == 2  # the depth probe and the second seg probe read the same stores
    assert again["results"] == seg["results"] and again["recipe"]["store"] == seg["recipe"]["store"]
    assert {Path(seg["recipe"]["store"][split]["path"]) for split in ("train", "eval")} == set(built)
    assert all(p.parent == tmp_path / "stores" for p in built)


def test_cli_refuses_a_config_of_the_other_task_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        probe_main("doc", "probe_depth.py", "depth", "configs/probe/seg_linear.yaml", argv=[])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_info.value.code == 2 and len(err) == 1 and "'seg' probe config" in err[0]


def test_cli_names_a_label_file_damaged_after_prepare_in_one_line_from_a_worker(damaged_copy, synthetic_infos,
                                                                                 tmp_path, capsys):
    root, path, num_points = damaged_copy("lidarseg_path", 10)
    with pytest.raises(SystemExit) as exit_info:
        probe_main("doc", "probe_seg.py", "seg", "configs/probe/seg_linear.yaml", argv=[
            "--out", str(tmp_path), "--no-progress", f"data.info_dir={synthetic_infos}", f"data.dataroot={root}",
            "data.num_workers=1", "data.image_size=[56,112]", "model.image.name=vit_pico_patch14_cpu"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_info.value.code == 2 and len(err) == 1
    assert err[0] == (f"error: {path}: 10 bytes hold 10 labels, its info record says {num_points}; the file changed "
                      "after prepare: re-run tools/prepare_nuscenes.py (with --overwrite)")


def test_exported_encoder_state_dict_loads_at_any_probe_size(tmp_path):
    torch.manual_seed(3)
    trained = ImageEncoder(PICO, (56, 112)).eval()
    run = tmp_path / "myrun"
    (run / "weights").mkdir(parents=True)
    weights = str(run / "weights" / "student.safetensors")
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, weights)
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"image_size": [56, 112]}}))
    images = torch.rand(2, 3, 56, 112)
    same = load_encoder(PICO, weights, (56, 112))
    torch.testing.assert_close(same(images).patch[0], trained(images).patch[0])
    bigger = load_encoder(PICO, weights, SIZE)
    assert bigger(torch.rand(1, 3, *SIZE)).patch[0].shape == (1, 64, 8, 16) and bigger.frozen
    cfg = ProbeConfig(encoder=weights)
    cfg.model.image.weights = "random"
    assert probe_name(cfg) == "myrun"
    (run / "config.yaml").unlink()
    with pytest.raises(WeightsError, match="config.yaml"):
        load_encoder(PICO, weights, SIZE)


def _write_folder_set(root, split, count, rng):
    """Images whose colour encodes the class of each 10x10 block; labels, uint16 depth, tags."""
    palette = np.array([[230, 20, 20], [20, 230, 20], [20, 20, 230], [230, 230, 20]], dtype=np.uint8)
    for sub in ("images", "labels", "depth"):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        blocks = rng.integers(0, 4, (9, 16))
        label = np.kron(blocks, np.ones((10, 10), dtype=np.int64)).astype(np.uint8)  # 90 x 160
        label[:10, :10] = 255                                                         # unlabelled corner
        Image.fromarray(palette[np.minimum(label, 3)]).save(root / split / "images" / f"im{i}.png")
        Image.fromarray(label).save(root / split / "labels" / f"im{i}.png")
        Image.fromarray((label.astype(np.uint16) * 256 + 256)).save(root / split / "depth" / f"im{i}.png")
    (root / split / "conditions.json").write_text(json.dumps({"im0": ["night"]}))
    return palette


def test_folder_dataset_round_trip_and_probe(tmp_path):
    rng = np.random.default_rng(0)
    palette = _write_folder_set(tmp_path, "train", 3, rng)
    _write_folder_set(tmp_path, "val", 2, rng)
    cfg = FolderConfig(root=str(tmp_path), num_classes=4, class_names=["r", "g", "b", "y"], depth_scale=256.0)
    seg = FolderViews(cfg, "train", "seg", (56, 112))
    (view,) = seg[0]
    assert view.image.shape == (3, 56, 112) and view.label.shape == (56, 112) and view.tags == ("night",)
    known = view.label != IGNORE
    colour = (view.image.permute(1, 2, 0) * 255).round().numpy()
    expected = palette[view.label[known].long().numpy()]
    assert np.mean(np.abs(colour[known.numpy()] - expected).max(1) < 40) > 0.9   # labels stay on their pixels
    assert seg[1][0].tags == ()
    (depth_view,) = FolderViews(cfg, "train", "depth", (56, 112))[0]
    torch.testing.assert_close(depth_view.depth[known], view.label[known].float() + 1.0)
    result = run_probe(load_config("configs/probe/seg_linear.yaml", [
        f"folder.root={tmp_path}", "folder.num_classes=4", "folder.class_names=[r,g,b,y]",
        "data.image_size=[56,112]", "model.image.name=vit_pico_patch14_cpu", "train.iterations=30",
        f"experiment.output_dir={tmp_path / 'out'}", "eval.showcase=0"], schema=ProbeConfig), progress=False)
    assert result["results"]["all"]["images"] == 2 and result["results"]["night"]["images"] == 1
    assert set(result["results"]["all"]["iou"]) == {"r", "g", "b", "y"} and "fidelity" not in result


def test_the_nuscenes_probe_configs_are_the_dinov2_protocols_and_share_one_store():
    from collab_distill.probe.config import check_probe_config, protocol_name

    seg, depth = (load_config(f"configs/nuscenes/probe_{task}.yaml", schema=ProbeConfig) for task in ("seg", "depth"))
    for cfg in (seg, depth):
        check_probe_config(cfg)
        assert cfg.device == "cuda" and cfg.data.cameras == ["all"] and cfg.train.max_samples == 0
        assert cfg.data.num_workers > 0 and cfg.store.dir and tuple(cfg.data.image_size) == (224, 448)
    assert (protocol_name(seg), protocol_name(depth)) == ("linear", "lin.1")
    assert (seg.train.iterations, seg.train.batch_size, depth.train.iterations) == (40000, 16, 38400)
    # what identifies a store is equal: encoder, blocks, image size, views (only the head differs)
    for key in ("encoder", "model", "data", "store", "gt", "folder", "experiment"):
        assert getattr(seg, key) == getattr(depth, key), key
    assert seg.head.blocks == depth.head.blocks and seg.eval.split == depth.eval.split


CORRUPT = ["pixelate", "speckle_noise"]


def test_corruption_rows_for_every_encoder_in_the_result_and_the_report(synthetic_infos, tmp_path, monkeypatch):
    from collab_distill.probe import stores
    from collab_distill.report import build_report

    built = []
    real = stores.build_probe_store
    monkeypatch.setattr(stores, "build_probe_store", lambda *args, **kwargs: built.append(
        (args[4], kwargs["corruption"])) or real(*args, **kwargs))
    torch.manual_seed(5)
    student = tmp_path / "stage2" / "weights" / "student.safetensors"
    student.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in ImageEncoder(PICO, (56, 112)).state_dict().items()}, str(student))
    (student.parent.parent / "config.yaml").write_text(yaml.safe_dump({"data": {"image_size": [56, 112]}}))
    corrupt = [f"eval.corruptions=[{','.join(CORRUPT)}]", "eval.corruption_severity=4", "eval.showcase=0"]
    depth = ["task=depth", "head.norm=false", "head.cls_token=true", "head.upsample=4", "head.batch_norm=false",
             "head.num_bins=64", "eval.fidelity=false"]
    results = {}
    for encoder in ("", str(student)):
        for task, extra in (("seg", []), ("depth", depth)):
            results[encoder, task] = run_probe(_tiny_cfg(synthetic_infos, tmp_path, f"encoder={encoder}", *corrupt,
                                                         *extra), progress=False)
    assert [c.name if c else None for _, c in built] == [None, None, *CORRUPT] * 2  # depth reads seg's stores
    for (encoder, task), result in results.items():
        assert list(result["corruptions"]) == ["clean", *CORRUPT] and result["recipe"]["corruption_severity"] == 4
        assert result["corruptions"]["clean"] == result["results"]  # every eval view: the clean reference = results
        for name in CORRUPT:
            rows = result["corruptions"][name]
            assert list(rows) == list(result["results"])
            assert all(rows[g]["images"] == result["results"][g]["images"] for g in rows)
            metric = "miou" if task == "seg" else "rmse"
            assert rows["all"][metric] is not None and rows["all"][metric] != result["results"]["all"][metric]
            store = ProbeStore(result["recipe"]["store"][f"eval:{name}"]["path"])
            assert store.meta["identity"]["views"]["corruption"] == {"name": name, "severity": 4, "seed": 0}
    report = json.loads(build_report([tmp_path / "teacher", tmp_path / "stage2"], tmp_path / "report")["json"]
                        .read_text())
    for task, metric in (("seg", "miou"), ("depth", "rmse")):
        rows = report["corruptions"][task]
        assert rows["names"] == CORRUPT and rows["severity"] == 4 and list(rows["values"]) == ["teacher", "stage2"]
        for encoder, name in (("", "teacher"), (str(student), "stage2")):
            for corruption in CORRUPT:
                assert rows["values"][name][corruption] == results[encoder, task]["corruptions"][corruption]["all"]
    text = (tmp_path / "report" / "report.md").read_text()
    section = text[text.index("### seg: unseen corruptions (evaluation only, severity 4, all views)"):]
    assert "| method | clean | pixelate | speckle_noise |" in section
    teacher = report["corruptions"]["seg"]["values"]["teacher"]
    assert f"| teacher | {100 * results['', 'seg']['results']['all']['miou']:.1f} | " \
           f"{100 * teacher['pixelate']['miou']:.1f} | {100 * teacher['speckle_noise']['miou']:.1f} |" in section


def test_unknown_or_repeated_corruptions_are_refused_in_one_line(synthetic_infos, tmp_path):
    for names, wrong in (("[fog]", "unknown 'fog'"), ("[pixelate,pixelate]", "a name twice")):
        with pytest.raises(ProbeError, match=rf"eval.corruptions .*: {wrong}; names: speckle_noise, pixelate"):
            run_probe(_tiny_cfg(synthetic_infos, tmp_path, f"eval.corruptions={names}"), progress=False)


def test_a_folder_set_with_arbitrary_tags_gives_one_row_per_tag(tmp_path):
    from collab_distill.report import build_report

    rng = np.random.default_rng(0)
    _write_folder_set(tmp_path, "train", 3, rng)
    _write_folder_set(tmp_path, "val", 4, rng)
    (tmp_path / "val" / "conditions.json").write_text(json.dumps(
        {"im0": ["tunnel", "night"], "im1": ["glare"], "im2": ["tunnel"], "other": ["unused"]}))
    folder = FolderConfig(root=str(tmp_path), num_classes=4)
    views = FolderViews(folder, "val", "seg", (56, 112))
    assert views.tag_vocabulary == ("night", "glare", "tunnel") and views[0][0].tags == ("night", "tunnel")
    result = run_probe(load_config("configs/probe/seg_linear.yaml", [
        f"folder.root={tmp_path}", "folder.num_classes=4", "data.image_size=[56,112]",
        "model.image.name=vit_pico_patch14_cpu", "train.iterations=5", f"experiment.output_dir={tmp_path / 'out'}",
        "eval.showcase=0", "eval.corruptions=[zoom_blur]", "eval.corruption_max_samples=2"], schema=ProbeConfig),
        progress=False)
    res = result["results"]
    assert list(res) == ["night", "glare", "tunnel", "all"]  # condition tags first, then the others sorted
    assert [res[g]["images"] for g in res] == [1, 1, 2, 4]
    clean, zoom = result["corruptions"]["clean"], result["corruptions"]["zoom_blur"]
    assert list(zoom) == list(res) and result["recipe"]["corruption_images"] == 2  # a seeded subset of 2 images
    assert [zoom[g]["images"] for g in res] == [clean[g]["images"] for g in res] and clean["all"]["images"] == 2
    assert ProbeStore(result["recipe"]["store"]["eval"]["path"]).tags_vocabulary == ["night", "glare", "tunnel"]
    assert ProbeStore(result["recipe"]["store"]["train"]["path"]).tags_vocabulary == ["night"]
    made = build_report([tmp_path / "out"], tmp_path / "report")
    assert json.loads(made["json"].read_text())["conditions"] == ["night", "glare", "tunnel", "all"]
    text = made["markdown"].read_text()
    assert "| method | night | glare | tunnel | all |" in text
    assert all(f"### seg: {group}" in text for group in res)


@pytest.mark.parametrize("content, wrong", [
    ("{not json", "not JSON"), ('{"im0": "night"}', "list of non-empty tag strings"),
    ('{"im0": [""]}', "list of non-empty tag strings"), ('{"im0": ["all"]}', "'all' is the group of every view")])
def test_a_bad_conditions_file_is_one_line_naming_it(tmp_path, content, wrong):
    _write_folder_set(tmp_path, "val", 1, np.random.default_rng(0))
    (tmp_path / "val" / "conditions.json").write_text(content)
    with pytest.raises(ProbeError, match=wrong) as info:
        FolderViews(FolderConfig(root=str(tmp_path), num_classes=4), "val", "seg", (56, 112))
    assert str(tmp_path / "val" / "conditions.json") in str(info.value) and "\n" not in str(info.value)
