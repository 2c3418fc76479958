"""prepare_nuscenes: info files agree with the devkit, round-trip, resume, and report bad files."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from collab_distill.data.info_store import InfoStore
from collab_distill.data.infos import InfoFileError, load_infos
from data_prep.check import check_infos
from data_prep.nuscenes_infos import PrepareError, parse_conditions, prepare
from tiny_nuscenes import write_tiny_nuscenes

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def tiny(tmp_path):
    return write_tiny_nuscenes(tmp_path / "nusc", num_samples=3, six_cameras=True)


def test_parse_conditions():
    assert parse_conditions("Night, rain, parked cars") == ["night", "rain"]
    assert parse_conditions("Synthetic street, foggy, intersection") == ["fog"]
    assert parse_conditions("Snowing, ped crossing") == ["snow"]
    assert parse_conditions("Parked cars, trainyard") == ["clear"]  # 'trainyard' is not rain


def test_prepare_round_trip_and_check(tiny, tmp_path):
    out = tmp_path / "infos"
    summary = prepare(tiny, "v1.0-mini", out, workers=2, progress=False)
    assert summary.samples == {"train": {"clear": 3}, "val": {}} and not summary.problems
    infos = load_infos(out / "infos_train.json")
    assert infos.nuscenes_version == "v1.0-mini" and infos.devkit_version not in ("", "unknown")
    assert len(infos.samples) == 3
    rec = json.loads((out / "infos_train.json").read_text())["samples"][0]
    info = infos.samples[0]
    assert info.token == rec["token"] and info.conditions == ("clear",)
    np.testing.assert_array_equal(info.cameras["CAM_BACK"].lidar2cam, np.asarray(rec["cameras"]["CAM_BACK"]["lidar2cam"]))
    assert set(info.cameras) == {"CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT",
                                 "CAM_FRONT_LEFT"}
    assert info.num_points == 6000
    result = check_infos(infos, "v1.0-mini", 2, tmp_path / "check")
    assert result.checked == 12 and result.same_kept_sets and result.max_error_px < 1e-3
    assert len(result.overlays) == 12 and all(p.stat().st_size > 0 for p in result.overlays)


def test_finished_run_is_noop_and_interrupted_run_resumes(tiny, tmp_path):
    out = tmp_path / "infos"
    prepare(tiny, "v1.0-mini", out, workers=1, progress=False)
    first = (out / "infos_train.json").read_bytes()
    assert prepare(tiny, "v1.0-mini", out, workers=1, progress=False).skipped
    # An interruption after the scene's part was written but before the merge: the rerun merges it.
    (out / "summary.json").unlink()
    (out / "infos_train.json").unlink()
    part = next((out / "parts" / "train").glob("*.json"))
    stamp = part.stat().st_mtime_ns
    summary = prepare(tiny, "v1.0-mini", out, workers=1, progress=False)
    assert not summary.skipped and part.stat().st_mtime_ns == stamp  # the scene was not redone
    assert (out / "infos_train.json").read_bytes() == first
    assert not list(out.rglob("*.tmp"))
    # A folder prepared before the info store existed (JSON only) is not complete: the rerun adds the store.
    shutil.rmtree(out / "infos_val")
    summary = prepare(tiny, "v1.0-mini", out, workers=1, progress=False)
    assert not summary.skipped and part.stat().st_mtime_ns == stamp
    assert len(InfoStore(out / "infos_val")) == 0 and len(InfoStore(out / "infos_train")) == 3
    summary = prepare(tiny, "v1.0-mini", out, workers=1, overwrite=True, progress=False)
    assert not summary.skipped and part.stat().st_mtime_ns != stamp


def test_missing_and_truncated_files_are_excluded_and_listed(tiny, tmp_path):
    lidar = sorted((tiny / "samples" / "LIDAR_TOP").glob("*.bin"))
    lidar[0].write_bytes(lidar[0].read_bytes()[:1234])             # truncated point file
    image = sorted((tiny / "samples" / "CAM_BACK").glob("*.jpg"))[1]
    image.write_bytes(image.read_bytes()[:-500])                    # truncated JPEG
    sorted((tiny / "samples" / "CAM_FRONT").glob("*.jpg"))[2].unlink()  # missing image
    summary = prepare(tiny, "v1.0-mini", tmp_path / "infos", workers=1, progress=False)
    assert summary.samples["train"] == {"clear": 2} and summary.excluded["train"] == 1
    assert len(summary.problems) == 3
    text = " | ".join(summary.problems)
    assert "truncated (1234 bytes" in text and "no JPEG end marker" in text and "missing" in text
    infos = load_infos(tmp_path / "infos" / "infos_train.json")
    assert "CAM_BACK" not in infos.samples[0].cameras and len(infos.samples[0].cameras) == 5
    assert "CAM_FRONT" not in infos.samples[1].cameras


def test_bad_dataroot_and_version(tiny, tmp_path):
    with pytest.raises(PrepareError, match="does not exist"):
        prepare(tmp_path / "nowhere", "v1.0-mini", tmp_path / "o", progress=False)
    with pytest.raises(PrepareError, match=r"v1.0-trainval has no scene.json.*found: v1.0-mini"):
        prepare(tiny, "v1.0-trainval", tmp_path / "o", progress=False)
    with pytest.raises(PrepareError, match="unknown version"):
        prepare(tiny, "v2.0", tmp_path / "o", progress=False)


def test_info_file_errors(tmp_path):
    with pytest.raises(InfoFileError, match="not found"):
        load_infos(tmp_path / "none.json")
    (tmp_path / "old.json").write_text(json.dumps({"schema_version": 0, "samples": []}))
    with pytest.raises(InfoFileError, match="schema version 0"):
        load_infos(tmp_path / "old.json")


def test_cli_bad_dataroot_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "prepare_nuscenes.py"), "--dataroot",
                           str(tmp_path / "x"), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr


def test_prepare_synthetic_counts_match_and_check_passes(synthetic_root, tmp_path):
    """On the synthetic world: the summary matches the devkit's own counts; multi-tag samples count once."""
    from nuscenes.nuscenes import NuScenes

    summary = prepare(synthetic_root, "v1.0-mini", tmp_path / "infos", workers=2, progress=False)
    nusc = NuScenes("v1.0-mini", str(synthetic_root), verbose=False)
    assert sum(summary.totals.values()) == len(nusc.sample) and not summary.problems
    val = load_infos(tmp_path / "infos" / "infos_val.json")
    assert summary.totals["val"] == len(val.samples)
    assert summary.samples["val"] == {"night": len(val.samples), "rain": len(val.samples)}  # night+rain scene
    assert all(s.lidarseg_path for s in val.samples)
    result = check_infos(val, "v1.0-mini", 1, tmp_path / "check")
    assert result.checked == 6 and result.same_kept_sets and result.max_error_px < 1e-3


# ---------------------------------------------------------------------------------------------
# Damaged tables (issue 14, 3.7) and data set strings as paths (3.8)
# ---------------------------------------------------------------------------------------------
def _edit_table(root: Path, table: str, edit) -> Path:
    path = root / "v1.0-mini" / f"{table}.json"
    records = json.loads(path.read_text())
    edit(records)
    path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize("workers", [1, 2])
def test_a_record_without_a_field_names_the_table_the_record_and_the_field(tiny, tmp_path, workers):
    """It used to be a bare KeyError: 'description' from a worker, naming neither table nor record."""
    table = _edit_table(tiny, "scene", lambda records: records[0].pop("description"))
    with pytest.raises(PrepareError, match=rf"^{table}: record scene0 has no field 'description'; restore"):
        prepare(tiny, "v1.0-mini", tmp_path / "infos", workers=workers, progress=False)


def test_a_record_the_devkit_cannot_index_and_a_damaged_table_are_named(tiny, tmp_path):
    table = _edit_table(tiny, "sample_data", lambda records: records[3].pop("sample_token"))
    with pytest.raises(PrepareError, match=rf"^{table}: record sd_\w+ has no field 'sample_token'"):
        prepare(tiny, "v1.0-mini", tmp_path / "infos", progress=False)
    table = tiny / "v1.0-mini" / "ego_pose.json"
    table.write_text(table.read_text()[:-20])
    with pytest.raises(PrepareError, match=rf"^{table}: not a readable JSON table"):
        prepare(tiny, "v1.0-mini", tmp_path / "infos", progress=False)


def test_cli_damaged_table_is_one_line_and_debug_shows_the_traceback(tiny, tmp_path):
    _edit_table(tiny, "calibrated_sensor", lambda records: records[1].pop("camera_intrinsic"))
    command = [sys.executable, str(REPO / "tools" / "prepare_nuscenes.py"), "--dataroot", str(tiny), "--out",
               str(tmp_path / "o"), "--workers", "1", "--quiet"]
    proc = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "INFO" not in line]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "calibrated_sensor.json: record cs_" in lines[0] and "'camera_intrinsic'" in lines[0]
    debug = subprocess.run(command + ["--debug"], capture_output=True, text=True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "PrepareError" in debug.stderr


def test_a_file_name_leading_outside_the_dataroot_is_refused(tiny, tmp_path):
    (tiny.parent / "outside.jpg").write_bytes(next((tiny / "samples" / "CAM_FRONT").glob("*.jpg")).read_bytes())

    def escape(records):
        records[1]["filename"] = "../outside.jpg"

    table = _edit_table(tiny, "sample_data", escape)
    with pytest.raises(PrepareError, match=rf"^{table}: record \w+: filename '../outside.jpg' leads outside the "
                                           rf"dataroot {tiny}"):
        prepare(tiny, "v1.0-mini", tmp_path / "infos", progress=False)


def test_a_token_with_dots_and_slashes_cannot_write_outside_the_check_folder(tiny, tmp_path):
    """A sample token ``../../x`` used to make ``--check`` write its overlay PNGs outside ``--out``."""
    for table in (tiny / "v1.0-mini").glob("*.json"):
        table.write_text(table.read_text().replace('"sample0"', '"../../x"'))
    out = tmp_path / "a" / "b" / "infos"
    prepare(tiny, "v1.0-mini", out, workers=1, progress=False)
    assert "../../x" in {s.token for s in load_infos(out / "infos_train.json").samples}
    result = check_infos(load_infos(out / "infos_train.json"), "v1.0-mini", 3, out / "check")
    assert result.checked == 18 and result.same_kept_sets
    written = sorted(p for p in tmp_path.rglob("*.png") if tiny not in p.parents)  # not the dataset's map
    assert written == sorted(result.overlays) and all(p.parent == out / "check" for p in written)
    assert (out / "check" / ".._.._x_CAM_FRONT.png") in written


def test_safe_name_and_join_inside():
    from collab_distill.paths import UnsafePathError, join_inside, safe_name

    assert safe_name("0a1b2c3d4e5f60718293a4b5c6d7e8f9") == "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    assert safe_name("CAM_FRONT") == "CAM_FRONT" and safe_name("../../tmp/x") == ".._.._tmp_x"
    assert safe_name("a b\\c:d") == "a_b_c_d"
    for bad in ("", ".", ".."):
        with pytest.raises(UnsafePathError):
            safe_name(bad)
    assert join_inside(Path("/data"), "samples/CAM_FRONT/x.jpg") == Path("/data/samples/CAM_FRONT/x.jpg")
    assert join_inside(Path("/data"), "samples/../sweeps/y.jpg") == Path("/data/sweeps/y.jpg")
    for bad in ("../x.jpg", "samples/../../x.jpg", "/etc/passwd", ".."):
        with pytest.raises(UnsafePathError, match="leads outside /data"):
            join_inside(Path("/data"), bad)
