"""The main job: its presets (``configs/demo/*.yaml``), its steps with a stand-in world builder, and the
smoke test: ``tools/demo.py --quick`` end to end, then a resumed run that skips every step. (The
smoke test is the slowest test: a few minutes on 2 cores.)"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from collab_distill.config import ConfigError, load_config
from collab_distill.data.world import WorldFiles
from collab_distill.methods.registry import method_names
from collab_distill.pipeline import BASELINES, QUICK_PRESET, DemoOptions, DemoPreset, load_preset, overrides, steps
from data_prep.world import SyntheticWorldBuilder

REPO = Path(__file__).resolve().parents[1]
UNSEEN = 'eval.corruptions=["speckle_noise", "pixelate", "zoom_blur"]'  # the 2D probes' unseen corruptions


def test_presets_keep_the_demo_sizes() -> None:
    default, quick = load_preset("configs/demo/default.yaml"), load_preset("configs/demo/quick.yaml")
    assert default.world == "configs/synthetic/demo.yaml" and quick.world == "configs/synthetic/demo_quick.yaml"
    sizes = {name: {step: overrides(getattr(preset, step)) for step in
                    ("teacher", "stage1", "stage2", "baseline", "probe", "lidar_probe")}
             for name, preset in (("default", default), ("quick", quick))}
    assert sizes == {
        "default": {"teacher": ["train.epochs=12"], "stage1": ["train.epochs=8", 'data.cameras=["all"]'],
                    "stage2": ["train.max_steps=90"], "baseline": ["train.max_steps=90"],
                    "probe": ["train.iterations=300", UNSEEN, "eval.corruption_severity=3",
                              "eval.corruption_max_samples=36"],
                    "lidar_probe": ["train.epochs=20"]},
        "quick": {"teacher": ["train.epochs=4"], "stage1": ["train.epochs=2", "train.batch_size=2"],
                  "stage2": ["train.max_steps=3"], "baseline": ["train.max_steps=3"],
                  "probe": ["train.iterations=60", 'data.cameras=["CAM_FRONT"]', UNSEEN, "eval.corruption_severity=3"],
                  "lidar_probe": ["train.epochs=10", 'data.cameras=["CAM_FRONT"]']}}
    assert isinstance(load_config("configs/demo/quick.yaml"), DemoPreset)      # the file names its schema


def test_a_fragment_sets_what_it_says_and_a_bad_one_is_refused_naming_the_step(tmp_path: Path) -> None:
    fragment = {"optim": {"lr": 1e-4}, "train": {"epochs": 3}, "data": {"cameras": ["CAM_FRONT", "CAM_BACK"]}}
    cfg = load_config("configs/stage1/synthetic.yaml", overrides(fragment))
    assert (cfg.optim.lr, cfg.train.epochs, cfg.data.cameras) == (1e-4, 3, ["CAM_FRONT", "CAM_BACK"])
    preset = tmp_path / "typo.yaml"
    preset.write_text("schema: demo\nlidar_probe: {train: {epoch: 3}}\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml: lidar_probe .*train\.epoch"):
        load_preset(str(preset))


def test_the_baselines_are_the_registrys() -> None:
    assert BASELINES == method_names("baseline") == ("teacher_plus", "asymmetric", "self_distill")


class RecordingWorld:
    """A :class:`~collab_distill.data.world.WorldBuilder` that records what it is asked to do."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def settings(self, config: str) -> dict[str, Any]:
        return {"config": config}

    def recorded_settings(self, root: Path) -> dict[str, Any] | None:
        return None

    def files(self, config: str, root: Path) -> WorldFiles:
        return WorldFiles(root / "made", root / "infos", root / "infos" / "ready")

    def generate(self, config: str, root: Path, workers: int, progress: bool) -> str:
        self.calls.append(("generate", config, str(root)))
        return "generated"

    def prepare(self, config: str, root: Path, workers: int, progress: bool) -> str:
        self.calls.append(("prepare", config, str(root)))
        return "prepared"


def test_steps_take_the_world_from_the_caller_and_the_configs_from_the_package(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)                    # the shipped configs are found from any working directory
    world = RecordingWorld()
    opts = DemoOptions(out=Path("out"), data=Path("world"), preset=QUICK_PRESET)
    todo = steps(opts, world)
    assert world.calls == []                        # listing the steps makes nothing
    names = [step.name for step in todo]
    assert names[:6] == ["synthetic world", "prepare", "teacher (clear only)", "teacher features", "stage 1",
                         "stage 2"]
    assert names[6:9] == list(BASELINES) and names[-3:] == ["3D probe: stage1", "3D probe: random_init", "report"]
    assert [todo[0].done_marker, todo[1].done_marker] == [Path("world/made"), Path("world/infos/ready")]
    assert {s.done_marker for s in todo if s.name.startswith("3D")} == {
        Path("out/seed0/probes/stage1/lidar_seg.json"), Path("out/seed0/probes/random_init/lidar_seg.json")}
    todo[0].run()
    todo[1].run()
    assert world.calls == [("generate", "configs/synthetic/demo_quick.yaml", "world"),
                           ("prepare", "configs/synthetic/demo_quick.yaml", "world")]


def _demo(out: Path, data: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / "demo.py"), "--quick", "--out", str(out),
                           "--data", str(data)], cwd=REPO, capture_output=True, text=True, timeout=900)


def test_quick_demo_runs_every_step_and_resumes(tmp_path):
    out, data = tmp_path / "demo", tmp_path / "world"
    first = _demo(out, data)
    assert first.returncode == 0, first.stderr[-3000:]
    opts = DemoOptions(out=out, data=data, preset=QUICK_PRESET)
    todo = steps(opts, SyntheticWorldBuilder())
    assert all(step.done_marker.is_file() for step in todo), [s.name for s in todo if not s.done_marker.is_file()]
    report = json.loads((out / "seed0" / "report" / "report.json").read_text())
    assert report["methods"][:5] == ["teacher", "teacher_plus", "asymmetric", "self_distill", "stage2"]
    assert {"clear", "fog", "all"} <= set(report["conditions"])  # the quick world's val: one clear, one fog scene
    for key in ("seg", "depth", "lidar_seg"):
        assert report["sections"][key]["values"], key
    seg = report["sections"]["seg"]["values"]
    assert all(0.0 <= seg[m]["all"]["miou"] <= 1.0 for m in seg)
    for key in ("seg", "depth"):  # the unseen-corruption rows of every 2D-probed encoder
        rows = report["corruptions"][key]
        assert rows["names"] == ["speckle_noise", "pixelate", "zoom_blur"] and list(rows["values"]) == list(seg)
    lidar = report["sections"]["lidar_seg"]["values"]
    assert set(lidar) == {"stage1", "random_init"}
    timings = [json.loads(line) for line in (out / "timings.jsonl").read_text().splitlines()]
    assert [t["step"] for t in timings] == [s.name for s in todo]
    assert "mIoU (%), higher is better" in first.stdout  # the final tables are printed

    again = _demo(out, data)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skipped (done before)") == len(todo)
