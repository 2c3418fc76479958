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
