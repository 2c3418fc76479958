"""The main job's smoke test: ``tools/demo.py --quick`` end to end, then a resumed run that skips
every step. (The slowest test: a few minutes on 2 cores.)"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _demo(out: Path, data: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / "demo.py"), "--quick", "--out", str(out),
                           "--data", str(data)], cwd=REPO, capture_output=True, text=True, timeout=900)


def test_quick_demo_runs_every_step_and_resumes(tmp_path):
    from collab_distill.pipeline import DemoOptions, steps

    out, data = tmp_path / "demo", tmp_path / "world"
    first = _demo(out, data)
    assert first.returncode == 0, first.stderr[-3000:]
    opts = DemoOptions(out=out, data=data, quick=True)
    todo = steps(opts)
    assert all(step.done_marker.is_file() for step in todo), [s.name for s in todo if not s.done_marker.is_file()]
    report = json.loads((out / "seed0" / "report" / "report.json").read_text())
    assert report["methods"][:5] == ["teacher", "teacher_plus", "asymmetric", "self_distill", "stage2"]
    assert {"clear", "fog", "all"} <= set(report["conditions"])  # the quick world's val: one clear, one fog scene
    for key in ("seg", "depth", "lidar_seg"):
        assert report["sections"][key]["values"], key
    seg = report["sections"]["seg"]["values"]
    assert all(0.0 <= seg[m]["all"]["miou"] <= 1.0 for m in seg)
    lidar = report["sections"]["lidar_seg"]["values"]
    assert set(lidar) == {"stage1", "random init"}
    timings = [json.loads(line) for line in (out / "timings.jsonl").read_text().splitlines()]
    assert [t["step"] for t in timings] == [s.name for s in todo]
    assert "mIoU (%), higher is better" in first.stdout  # the final tables are printed

    again = _demo(out, data)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skipped (done before)") == len(todo)
