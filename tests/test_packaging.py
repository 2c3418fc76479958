"""The shipped configs are package data: a wheel built from the sources holds every YAML under
``collab_distill/configs``, and the installed (non-editable) package finds them from another working
directory through ``resolve_config_path``."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "collab_distill" / "configs"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built offline from a copy of the sources (an in-tree build would write build/ here)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for package in ("collab_distill", "data_prep"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "--quiet", "--wheel-dir", str(tmp / "dist"), str(src)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (found,) = (tmp / "dist").glob("collab_distill-*.whl")
    return found


def test_the_wheel_ships_every_config(wheel: Path) -> None:
    shipped = {str(p.relative_to(REPO)) for p in CONFIGS.rglob("*.yaml")}
    assert {"collab_distill/configs/stage1/synthetic.yaml", "collab_distill/configs/demo/quick.yaml"} <= shipped
    with zipfile.ZipFile(wheel) as archive:
        packed = {name for name in archive.namelist() if name.endswith(".yaml")}
    assert packed == shipped


def test_the_installed_package_finds_its_configs_from_another_folder(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:       # installing a pure-Python wheel is unpacking it
        archive.extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = ("import json, collab_distill\n"
              "from collab_distill.config import load_config, resolve_config_path\n"
              "path = resolve_config_path('configs/stage1/synthetic.yaml')\n"
              "cfg = load_config('configs/stage1/synthetic.yaml')\n"
              "print(json.dumps({'package': collab_distill.__file__, 'path': str(path), 'method': cfg.method.name}))\n")
    run = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env={"PYTHONPATH": str(site)},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.splitlines()[-1])
    assert Path(found["package"]).is_relative_to(site)                # not the source tree
    assert Path(found["path"]) == site / "collab_distill" / "configs" / "stage1" / "synthetic.yaml"
    assert found["method"] == "stage1"
