"""tools/probe_lidar.py: expected errors are one line and exit 2, naming what the user typed (issue 14, 3.7);
``--out`` is a folder and the result goes to OUT/NAME/lidar_seg.json, as the image probes' OUT/NAME/seg.json."""
from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from collab_distill.config import load_config
from collab_distill.models.weights import WeightsError
from collab_distill.probe.lidar import LidarProbeConfig, build_stage1

REPO = Path(__file__).resolve().parents[1]


def test_missing_point_weights_name_the_flag_not_the_stage2_key(tmp_path):
    """The message used to say method.point_weights (stage 2's key), with a traceback."""
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "probe_lidar.py"), "--point-weights",
                           str(tmp_path / "weights"), "--out", str(tmp_path / "probes"), "model.image.weights=random"],
                          capture_output=True, text=True, cwd=REPO)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(errors) == 1, proc.stderr
    assert f"{tmp_path / 'weights' / 'point_encoder.safetensors'} not found: point --point-weights" in errors[0]
    assert "method.point_weights" not in errors[0] and not (tmp_path / "probes").exists()


@pytest.mark.parametrize("flags, name", [(["--point-weights", "{runs}/stage1/weights"], "stage1"),
                                         (["--point-weights", "{runs}/stage1/weights", "--name", "mine"], "mine"),
                                         ([], "random_init")])
def test_the_result_goes_to_out_name_and_an_existing_one_is_refused_before_any_work(tmp_path, capsys, flags, name):
    existing = tmp_path / "probes" / name / "lidar_seg.json"
    existing.parent.mkdir(parents=True)
    existing.write_text("{}")
    main = runpy.run_path(str(REPO / "tools" / "probe_lidar.py"))["main"]
    with pytest.raises(SystemExit) as exit_info:  # the weights do not exist: refused before they are read
        main([*(f.format(runs=tmp_path / "runs") for f in flags), "--out", str(tmp_path / "probes")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith(f"error: {existing} exists"), err
    assert "--overwrite" in err[0] and existing.read_text() == "{}"


def test_a_damaged_weight_file_is_named(tmp_path):
    (tmp_path / "point_encoder.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    cfg = load_config(None, [f"point_weights={tmp_path}", "model.image.weights=random"], schema=LidarProbeConfig)
    with pytest.raises(WeightsError, match=rf"^{tmp_path / 'point_encoder.safetensors'}: cannot read"):
        build_stage1(cfg)


def test_the_nuscenes_probe_config_matches_the_stage1_run_it_probes():
    """configs/nuscenes/probe_lidar.yaml cannot inherit from the run configs (another schema): its encoder,
    head, teacher and point data must still be those of configs/nuscenes/vit_s14/stage1.yaml."""
    from collab_distill.config import RunConfig, config_to_dict

    probe = config_to_dict(load_config("configs/nuscenes/probe_lidar.yaml", schema=LidarProbeConfig))
    stage1 = config_to_dict(load_config("configs/nuscenes/vit_s14/stage1.yaml", schema=RunConfig))
    assert probe["model"]["point"] == stage1["model"]["point"] and probe["model"]["head"] == stage1["model"]["head"]
    for key in ("name", "weights", "blocks", "norm"):
        assert probe["model"]["image"][key] == stage1["model"]["image"][key], key
    for key in ("image_size", "nsweeps", "voxel_size", "num_workers"):
        assert probe["data"][key] == stage1["data"][key], key
    assert probe["device"] == "cuda" and probe["train"]["points_per_scan"] > 0


def test_a_store_of_another_encoder_is_one_error_line_and_overwrite_replaces_it(synthetic_infos, tmp_path, capsys):
    main = runpy.run_path(str(REPO / "tools" / "probe_lidar.py"))["main"]
    tiny = [f"data.info_dir={synthetic_infos}", "model.image.name=vit_pico_patch14_cpu", "data.image_size=[56,112]",
            "model.point.enc_widths=[8,16]", "model.point.enc_depths=[1,1]", "model.point.dec_widths=[16,16]",
            "model.point.dec_depths=[1,1]", "model.point.stem_width=8", "train.epochs=1", "data.voxel_size=0.4",
            f"store={tmp_path / 'points'}", "eval.agreement=false", "--no-progress", "--out", str(tmp_path / "probes")]
    main([*tiny, "--name", "first"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*tiny, "--name", "second", "experiment.seed=1"])   # another random init, the same store folder
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_info.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {tmp_path / 'points'}: encoder.weights_sha256 is ") and "--overwrite" in err[0]
    main([*tiny, "--name", "second", "experiment.seed=1", "--overwrite"])
    assert (tmp_path / "probes" / "second" / "lidar_seg.json").is_file()


@pytest.mark.slow
def test_two_processes_write_one_shard_each_and_the_main_one_the_result(synthetic_infos, tmp_path, two_cpu_processes):
    """``accelerate launch`` with 2 CPU processes (gloo): each writes its shard of the store (rows dealt
    round-robin), the same rows as one process builds (float16 rounding apart); one result."""
    import numpy as np

    from collab_distill.probe.lidar import build_stage1
    from collab_distill.probe.lidar_features import build_point_store
    from collab_distill.probe.lidar_store import PointStore

    launcher, env = two_cpu_processes
    tiny = [f"data.info_dir={synthetic_infos}", "model.image.name=vit_pico_patch14_cpu", "data.image_size=[56,112]",
            "model.point.enc_widths=[8,16]", "model.point.enc_depths=[1,1]", "model.point.dec_widths=[16,16]",
            "model.point.dec_depths=[1,1]", "model.point.stem_width=8", "train.epochs=1", "data.voxel_size=0.4",
            "train.feature_batch=1"]
    proc = subprocess.run([*launcher, "tools/probe_lidar.py", *tiny, "--out", str(tmp_path / "two"), "--no-progress"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("written to") == 1
    two = PointStore(tmp_path / "two" / "random_init" / "train_points")
    cfg = load_config("configs/probe_lidar/synthetic.yaml", tiny, schema=LidarProbeConfig)
    one = build_point_store(cfg, build_stage1(cfg), tmp_path / "one", progress=False)
    assert (two.processes, two.rows, two.points) == (2, one.rows, one.points)
    for row in range(one.rows):
        (f1, y1), (f2, y2) = one.read_points([row]), two.read_points([row])
        assert np.array_equal(y1, y2)
        np.testing.assert_allclose(f2.astype(np.float32), f1.astype(np.float32), rtol=1e-2, atol=2e-3)
