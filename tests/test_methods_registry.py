"""The method list exists once (methods/registry.py): every place that names methods derives from it,
and this test fails when a method is missing from any of them."""
from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from collab_distill.config import ConfigError, RunConfig, declared_schema, load_config, resolve_config_path
from collab_distill.methods.registry import METHODS, build_method, method_entry, method_names

REPO = Path(__file__).resolve().parents[1]
GROUPS = ("teacher", "stage1", "stage2", "baseline")


def test_registry_order_and_groups():
    assert method_names() == ("teacher_pretrain", "teacher_ssl", "stage1", "stage2", "teacher_plus", "asymmetric",
                              "self_distill")
    assert method_names("baseline") == ("teacher_plus", "asymmetric", "self_distill")
    assert {entry.group for entry in METHODS.values()} == set(GROUPS)
    assert method_names("nonsense") == ()


@pytest.mark.parametrize("name", list(METHODS))
def test_the_config_accepts_every_registered_method_with_its_own_section(name):
    entry = METHODS[name]
    cfg = load_config(None, [f"method.name={name}"])
    assert type(cfg.method) is entry.config and cfg.method.name == name
    assert dataclasses.fields(entry.config)[0].name == "name"


@pytest.mark.parametrize("name", list(METHODS))
def test_every_default_config_exists_and_runs_its_method(name):
    path = resolve_config_path(METHODS[name].default_config)
    assert load_config(path, schema=RunConfig).method.name == name


def test_every_shipped_run_config_names_a_registered_method():
    named = set()
    for path in sorted((REPO / "collab_distill" / "configs").rglob("*.yaml")):
        if declared_schema(path) == "run":
            cfg = load_config(path)
            assert cfg.method.name in METHODS, path
            named.add(cfg.method.name)
    assert named == set(METHODS), "a registered method has no shipped config"


def test_every_target_is_a_method_class():
    from collab_distill.methods.base import Method

    for name, entry in METHODS.items():
        module, _, cls = entry.target.partition(":")
        assert issubclass(getattr(importlib.import_module(module), cls), Method), name


def test_build_method_refuses_an_unknown_name_and_a_section_of_another_method():
    from collab_distill.methods.config import Stage1Config

    with pytest.raises(ConfigError, match=r"^unknown method.name 'stage3'; valid: teacher_pretrain, teacher_ssl, "
                                          r"stage1, stage2, teacher_plus, asymmetric, self_distill$"):
        method_entry("stage3")
    with pytest.raises(ConfigError, match=r"method.name='stage2' has a Stage1Config section; this method reads a "
                                          r"Stage2Config"):
        build_method(RunConfig(method=Stage1Config(name="stage2")))


def test_every_group_has_its_train_alias_tool():
    """tools/train.py runs any method; tools/train_<group>.py runs one group (H3's aliases)."""
    assert (REPO / "tools" / "train.py").is_file()
    for group in GROUPS:
        alias = REPO / "tools" / f"train_{group}.py"
        assert alias.is_file() and f'group="{group}"' in alias.read_text(), alias


def test_the_demo_baselines_are_the_registry_baseline_group():
    from collab_distill import pipeline

    assert tuple(pipeline.BASELINES) == method_names("baseline")


def test_the_registry_and_the_config_import_no_method_module():
    script = ("import json, sys\nimport collab_distill.config, collab_distill.methods.registry\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'spconv') "
              "or m.startswith('collab_distill.methods.') and m.rsplit('.', 1)[1] not in ('registry', 'config'))))")
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout) == []
