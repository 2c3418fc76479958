"""Two CPU processes (gloo, via ``accelerate launch``) train exactly like one process at the same total batch.

Uses the asymmetric baseline: a ViT has LayerNorm only. (A method with BatchNorm in its trainable part,
stage 1's point encoder, differs by design across process counts on CPU: SyncBatchNorm is GPU-only.)
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_processes_match_one(textured_infos_dir, tmp_path, two_cpu_processes):
    args = ["--config", "configs/baselines/asymmetric.yaml", f"data.info_dir={textured_infos_dir}",
            "model.image.name=vit_pico_patch14_cpu", "data.image_size=[56,112]", "data.cameras=[CAM_FRONT]",
            "train.max_steps=3", "train.batch_size=2", "optim.lr=5e-4", "method.degradations=[fog,night]",
            "method.severities=[3]"]
    launcher, env = two_cpu_processes
    runs = {"one": [sys.executable], "two": launcher}
    for name, prefix in runs.items():
        proc = subprocess.run([*prefix, "tools/train_baseline.py", *args, f"experiment.output_dir={tmp_path / name}"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    one = load_file(tmp_path / "one" / "weights" / "student.safetensors")
    two = load_file(tmp_path / "two" / "weights" / "student.safetensors")
    assert max(float((one[k] - two[k]).abs().max()) for k in one) < 1e-5
    losses = [[json.loads(line)["loss"] for line in (tmp_path / n / "metrics.jsonl").read_text().splitlines()]
              for n in runs]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
