"""3D linear probe: the head learns separable features, not random ones; per-condition results; recipe;
a damaged label file is named."""
from __future__ import annotations

import re

import pytest
import torch

from collab_distill.config import load_config
from collab_distill.data.dataset import DataFileError
from collab_distill.data.taxonomy import IGNORE, LIDARSEG_CLASSES
from collab_distill.models.weights import WeightsError
from collab_distill.probe.lidar import (
    LidarProbeConfig,
    LidarProbeTrainConfig,
    evaluate,
    lidar_result_path,
    run_lidar_probe,
    train_head,
)


def _split(features: torch.Tensor, labels: torch.Tensor, tags: list[tuple[str, ...]]) -> dict:
    per = len(labels) // len(tags)
    return {"features": features, "labels": labels, "sample": torch.arange(len(labels)) // per, "tags": tags,
            "cosine": []}


def test_head_separates_informative_features_and_not_random_ones():
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, len(LIDARSEG_CLASSES), (4000,), generator=gen)
    labels[::17] = IGNORE
    informative = torch.nn.functional.one_hot(labels.clamp(max=len(LIDARSEG_CLASSES) - 1), len(LIDARSEG_CLASSES)).float() * 3
    informative += 0.3 * torch.randn(informative.shape, generator=gen)
    noise = torch.randn(4000, 16, generator=gen)
    cfg = LidarProbeTrainConfig(epochs=25, lr=5e-2, batch_points=2000)
    tags = [("clear",), ("night", "rain")]
    good = evaluate(train_head(informative[:2000], labels[:2000], cfg, progress=False),
                    _split(informative[2000:], labels[2000:], tags))
    bad = evaluate(train_head(noise[:2000], labels[:2000], cfg, progress=False),
                   _split(noise[2000:], labels[2000:], tags))
    assert good["all"]["miou"] > 0.95 and bad["all"]["miou"] < 0.2
    assert set(good) == {"all", "clear", "night", "rain"}
    assert good["night"]["samples"] == good["rain"]["samples"] == 1 and good["all"]["samples"] == 2
    assert good["clear"]["points"] + good["night"]["points"] == good["all"]["points"]


def _tiny_cfg(synthetic_infos, *overrides: str) -> LidarProbeConfig:
    return load_config("configs/probe_lidar/synthetic.yaml", [
        f"data.info_dir={synthetic_infos}", "model.image.name=vit_pico_patch14_cpu", "data.image_size=[56,112]",
        "model.point.enc_widths=[8,16]", "model.point.enc_depths=[1,1]", "model.point.dec_widths=[16,16]",
        "model.point.dec_depths=[1,1]", "model.point.stem_width=8", "train.epochs=3", "data.voxel_size=0.4", *overrides],
        schema=LidarProbeConfig)


def test_probe_runs_on_the_synthetic_world(synthetic_infos):
    result = run_lidar_probe(_tiny_cfg(synthetic_infos), progress=False)
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


def test_sweep_points_are_features_but_not_labelled_points(synthetic_infos):
    """With data.nsweeps=3 the sweeps' points (label IGNORE) reach the encoder; the labelled points are the
    keyframes', as with one sweep."""
    one = run_lidar_probe(_tiny_cfg(synthetic_infos, "train.epochs=1"), progress=False)
    three = run_lidar_probe(_tiny_cfg(synthetic_infos, "train.epochs=1", "data.nsweeps=3"), progress=False)
    assert three["recipe"]["train_points"] == one["recipe"]["train_points"] > 0
    assert three["results"]["all"]["points"] == one["results"]["all"]["points"]


def test_a_label_file_truncated_after_prepare_names_the_file(damaged_copy, synthetic_infos):
    """It used to surface later as an unrelated IndexError (labels indexed by the pairs)."""
    root, path, num_points = damaged_copy("lidarseg_path", 100)
    with pytest.raises(DataFileError, match=re.escape(f"{path}: 100 bytes hold 100 labels, its info record says "
                                                      f"{num_points};")):
        run_lidar_probe(_tiny_cfg(synthetic_infos, f"data.dataroot={root}"), progress=False)


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
