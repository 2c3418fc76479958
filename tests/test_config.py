"""Config system: inheritance, overrides, one-line errors that name the key and the file."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from collab_distill.config import (
    SCHEMA_MODULES,
    SCHEMAS,
    ConfigError,
    RunConfig,
    declared_schema,
    load_config,
    register_schema,
    resolve_config_path,
    save_run_config,
)

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_inheritance_and_overrides(tmp_path):
    _write(tmp_path / "base.yaml", "optim:\n  lr: 0.01\n  warmup_steps: 5\ntrain:\n  batch_size: 8\n")
    child = _write(tmp_path / "sub" / "child.yaml", "base: ../base.yaml\noptim:\n  lr: 0.002\n")
    cfg = load_config(child, ["train.batch_size=4", "data.image_size=[112,224]", "data.cameras=[CAM_BACK]"])
    assert cfg.optim.lr == 0.002          # child wins over base
    assert cfg.optim.warmup_steps == 5    # inherited
    assert cfg.train.batch_size == 4      # command line wins over files
    assert cfg.data.image_size == (112, 224) and isinstance(cfg.data.image_size, tuple)
    assert cfg.data.cameras == ["CAM_BACK"]
    assert cfg.optim.weight_decay == RunConfig().optim.weight_decay  # schema default


def test_int_is_accepted_for_float_but_not_bool(tmp_path):
    cfg = load_config(None, ["optim.lr=1"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert load_config(None, ["optim.lr=1e-4"]).optim.lr == 1e-4  # YAML 1.1 reads 1e-4 as a string
    with pytest.raises(ConfigError, match="'optim.lr' expects float, got 'fast'"):
        load_config(None, ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="'train.batch_size' expects int"):
        load_config(None, ["train.batch_size=true"])


def test_unknown_key_names_key_and_file(tmp_path):
    base = _write(tmp_path / "base.yaml", "optim:\n  lrr: 0.1\n")
    child = _write(tmp_path / "child.yaml", "base: base.yaml\ntrain:\n  epochs: 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(child)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(base) in msg and "'optim.lrr'" in msg and "did you mean 'optim.lr'" in msg


def test_unknown_key_from_command_line():
    with pytest.raises(ConfigError, match=r"^command line: unknown key 'trian'"):
        load_config(None, ["trian.epochs=3"])


def test_wrong_type_names_key_and_file(tmp_path):
    path = _write(tmp_path / "bad.yaml", "train:\n  epochs: three\n")
    with pytest.raises(ConfigError, match=rf"^{path}: key 'train.epochs' expects int, got 'three'"):
        load_config(path)


def test_wrong_literal_and_tuple_length(tmp_path):
    with pytest.raises(ConfigError, match="must be one of"):
        load_config(None, ["train.mixed_precision=fp8"])
    with pytest.raises(ConfigError, match="expects 2 values, got 3"):
        load_config(None, ["data.image_size=[1,2,3]"])


def test_missing_file_and_missing_base(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    child = _write(tmp_path / "child.yaml", "base: gone.yaml\n")
    with pytest.raises(ConfigError, match=r"gone.yaml: config file not found \(base of .*child.yaml\)"):
        load_config(child)


def test_circular_base(tmp_path):
    _write(tmp_path / "a.yaml", "base: b.yaml\n")
    _write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yaml")


def test_every_shipped_config_names_its_schema_and_loads_with_it():
    """What tools/show_config.py does: no folder -> schema map, the file says what it is."""
    import data_prep.synthetic.config  # noqa: F401 (registers `synthetic`; collab_distill never imports data_prep)

    files = sorted((REPO / "collab_distill" / "configs").rglob("*.yaml"))
    assert len(files) >= 15, "configs missing"
    for path in files:
        cfg = load_config(path)
        assert declared_schema(path) in SCHEMAS, path  # declared, not the run default
        assert type(cfg) is SCHEMAS[declared_schema(path)], path


def test_a_config_for_another_tool_is_one_line_naming_both_schemas():
    from collab_distill.probe.config import ProbeConfig

    with pytest.raises(ConfigError, match=r"^configs/probe/seg_linear.yaml is a 'probe' config; this tool reads "
                                          r"'run' configs$"):
        load_config("configs/probe/seg_linear.yaml", schema=RunConfig)
    with pytest.raises(ConfigError, match="is a 'run' config; this tool reads 'probe' configs"):
        load_config("configs/stage1/synthetic.yaml", schema=ProbeConfig)


def test_schema_names_errors(tmp_path, monkeypatch):
    import data_prep.synthetic.config  # noqa: F401

    unknown = _write(tmp_path / "x.yaml", "schema: nonsense\n")
    with pytest.raises(ConfigError, match=r"x.yaml: unknown schema 'nonsense' \(known: .*lidar_probe.*\)"):
        load_config(unknown)
    monkeypatch.delitem(SCHEMAS, "synthetic")  # as in a process that never imported data_prep
    with pytest.raises(ConfigError, match="schema 'synthetic' is registered by data_prep.synthetic.config: "
                                          "import it"):
        load_config("configs/synthetic/tiny.yaml")
    mixed = _write(tmp_path / "mixed.yaml", "schema: probe\nbase: " + str(REPO / "configs" / "base.yaml") + "\n")
    with pytest.raises(ConfigError, match=r"mixed.yaml: schema 'probe' differs from 'run' of its base .*base.yaml"):
        load_config(mixed)
    with pytest.raises(ValueError, match="already registered"):
        register_schema("run", dict)


def test_every_schema_module_registers_its_schema():
    """SCHEMA_MODULES (what the loader imports, and what its error names) is right for every name."""
    import importlib

    for name, module in SCHEMA_MODULES.items():
        importlib.import_module(module)
        assert name in SCHEMAS, f"{module} does not register {name!r}"
    assert set(SCHEMAS) <= set(SCHEMA_MODULES)


def test_a_file_without_schema_is_a_run_config_and_says_so(tmp_path):
    path = _write(tmp_path / "probe.yaml", "task: seg\n")
    with pytest.raises(ConfigError, match=r"unknown key 'task' in a 'run' config \(the file names no 'schema:'\)"):
        load_config(path)


def test_config_paths_resolve_to_the_shipped_configs_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = REPO / "collab_distill" / "configs" / "stage2" / "synthetic.yaml"
    assert resolve_config_path("configs/stage2/synthetic.yaml").resolve() == shipped.resolve()
    assert resolve_config_path("stage2/synthetic.yaml").resolve() == shipped.resolve()
    assert load_config("configs/stage2/synthetic.yaml").method.name == "stage2"
    own = _write(tmp_path / "configs" / "stage2" / "synthetic.yaml", "schema: run\ntrain:\n  epochs: 7\n")
    assert resolve_config_path("configs/stage2/synthetic.yaml") == Path("configs/stage2/synthetic.yaml")  # as given
    assert load_config(own).train.epochs == 7
    mine = _write(tmp_path / "mine.yaml", "base: configs/stage1/synthetic.yaml\ntrain:\n  epochs: 3\n")
    own.unlink()
    cfg = load_config(mine)  # a base that is not beside the file: the shipped one
    assert cfg.train.epochs == 3 and cfg.data.point_aug.rotate_deg == 180  # the rest: configs/stage1/synthetic.yaml
    with pytest.raises(ConfigError, match="nowhere.yaml: config file not found"):
        resolve_config_path("configs/nowhere.yaml")


# ---------------------------------------------------------------------------------------------
# method: the section of the method method.name names
# ---------------------------------------------------------------------------------------------
def test_method_section_is_the_named_methods_dataclass(tmp_path):
    from collab_distill.methods.config import ImageDistillConfig, Stage1Config, Stage2Config

    assert type(load_config(None).method) is Stage1Config and RunConfig().method == Stage1Config()
    stage2 = load_config("configs/stage2/synthetic.yaml")
    assert type(stage2.method) is Stage2Config and stage2.method.pixel_to_point_weight == 1.0
    # a base of another method: its method keys (teacher_store, stage1_loss) are not inherited
    assert not hasattr(stage2.method, "teacher_store")
    # the same dataclass under another name keeps the inherited keys
    base = _write(tmp_path / "a.yaml", "schema: run\nmethod:\n  name: asymmetric\n  attn_blocks: 3\n")
    child = _write(tmp_path / "b.yaml", "base: a.yaml\nmethod:\n  name: self_distill\n")
    cfg = load_config(child)
    assert type(cfg.method) is ImageDistillConfig and (cfg.method.name, cfg.method.attn_blocks) == ("self_distill", 3)
    assert load_config(base, ["method.name=stage1"]).method == Stage1Config()  # an override switches too
    assert load_config(child, ["method.attn_blocks=2"]).method.attn_blocks == 2


def test_a_key_of_another_method_names_the_key_the_file_and_the_method(tmp_path):
    path = _write(tmp_path / "s2.yaml", "base: " + str(REPO / "configs" / "stage2" / "synthetic.yaml")
                  + "\nmethod:\n  patch_weight: 0.5\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (f"{path}: unknown key 'method.patch_weight' for method 'stage2' (a key of teacher_plus, "
                              "asymmetric, self_distill; stage2 reads anchor_weight, name, pixel_to_point_weight, "
                              "point_weights, retention_weight)")
    with pytest.raises(ConfigError, match=r"^command line: unknown key 'method.anchr_weight' for method 'stage2' "
                                          r"\(did you mean 'method.anchor_weight'\?\)$"):
        load_config("configs/stage2/synthetic.yaml", ["method.anchr_weight=1"])
    with pytest.raises(ConfigError, match=r"^command line: key 'method.name' must be one of \['teacher_pretrain', "
                                          r"'teacher_ssl', 'stage1', 'stage2', 'teacher_plus', 'asymmetric', 'self_distill'\], "
                                          r"got 'stage3'$"):
        load_config(None, ["method.name=stage3"])


def test_saved_config_round_trips_and_records_git_sha(tmp_path):
    cfg = load_config(None, ["optim.lr=0.5", "data.conditions=[night,rain]"])
    save_run_config(cfg, tmp_path / "run")
    assert declared_schema(tmp_path / "run" / "config.yaml") == "run"
    assert load_config(tmp_path / "run" / "config.yaml") == cfg
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["threads"]["OMP_NUM_THREADS"] == os.environ.get("OMP_NUM_THREADS")  # results depend on it
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if head.returncode == 0:  # inside a git checkout with commits, the SHA must be HEAD's
        assert meta["git_sha"].split("-")[0] == head.stdout.strip()
    else:
        assert meta["git_sha"] == "unknown"
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["optim"]["lr"] == 0.5


def test_cli_reports_bad_config_in_one_line(tmp_path):
    bad = _write(tmp_path / "bad.yaml", "base: " + str(REPO / "configs" / "base.yaml") + "\noptim:\n  lrr: 1\n")
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "show_config.py"), "--config", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown key 'optim.lrr'" in lines[0] and str(bad) in lines[0]


# ---------------------------------------------------------------------------------------------
# Value ranges (issue 14, 3.4): declared in the schemas, one line naming key, origin, range, value
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, rule", [
    ("train.batch_size=0", "must be >= 1, got 0"),
    ("train.batch_size=-1", "must be >= 1, got -1"),
    ("train.grad_accum=0", "must be >= 1, got 0"),
    ("train.log_every=0", "must be >= 1, got 0"),
    ("train.max_steps=-5", "must be >= 0, got -5"),
    ("train.epochs=0", "must be >= 1, got 0"),
    ("data.voxel_size=0", "must be > 0, got 0.0"),
    ("optim.lr=-1e-3", "must be > 0, got -0.001"),
    ("optim.lr=.nan", "must be > 0, got nan"),
    ("optim.betas=[0.9,1.0]", "must be in [0, 1), got 1.0"),
    ("data.image_aug.hflip_prob=1.5", "must be in [0, 1], got 1.5"),
    ("method.severities=[1,6]", "must be in [1, 5], got 6"),
    ("method.anchor_weight=-1", "must be >= 0, got -1.0"),
    ("model.point.enc_widths=[16,0]", "must be >= 1, got 0"),
])
def test_out_of_range_values_are_one_line_naming_key_range_and_value(override, rule):
    key = override.split("=")[0]
    if override.startswith(("optim.betas", "method.severities", "model.point.enc_widths")):
        key += "[1]"
    method = {"method.severities": ["method.name=asymmetric"], "method.anchor_weight": ["method.name=stage2"]}
    with pytest.raises(ConfigError) as err:
        load_config(None, [*method.get(override.split("=")[0], []), override])
    assert str(err.value) == f"command line: key '{key}' {rule}"


def test_out_of_range_value_in_a_file_names_the_file(tmp_path):
    path = _write(tmp_path / "run.yaml", "data:\n  voxel_size: 0\n")
    with pytest.raises(ConfigError, match=rf"^{path}: key 'data.voxel_size' must be > 0, got 0.0$"):
        load_config(path)


def test_every_schema_declares_its_ranges():
    from collab_distill.defense.study import ASVPStudyConfig
    from collab_distill.probe.config import ProbeConfig
    from collab_distill.probe.lidar import LidarProbeConfig
    from data_prep.synthetic.config import SyntheticConfig

    for schema, override in ((ProbeConfig, "train.batch_size=0"), (ProbeConfig, "head.num_bins=1"),
                             (LidarProbeConfig, "train.batch_points=0"), (LidarProbeConfig, "train.epochs=0"),
                             (SyntheticConfig, "jpeg_quality=101"), (SyntheticConfig, "weather.severity=0"),
                             (SyntheticConfig, "samples_per_scene=41"), (ASVPStudyConfig, "threads=0"),
                             (ASVPStudyConfig, "restoration.teacher.steps=0"),
                             (ASVPStudyConfig, "encoder.distill_lr=0")):
        with pytest.raises(ConfigError, match=rf"^command line: key '{re.escape(override.split('=')[0])}' must be "):
            load_config(None, [override], schema=schema)


def test_defaults_are_in_range_and_code_built_configs_are_checked():
    from collab_distill.config import check_config
    from collab_distill.defense.study import ASVPStudyConfig
    from collab_distill.probe.config import ProbeConfig
    from collab_distill.probe.lidar import LidarProbeConfig
    from data_prep.synthetic.config import SyntheticConfig, validate_config

    for schema in (RunConfig, ProbeConfig, LidarProbeConfig, SyntheticConfig, ASVPStudyConfig):
        check_config(schema(), "defaults")
    with pytest.raises(ConfigError, match=r"^synthetic config: key 'scenes' must be >= 1, got 0$"):
        validate_config(SyntheticConfig(scenes=0))


def test_train_tool_refuses_a_negative_batch_before_making_the_run_folder(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "train_stage1.py"), "--config",
                           str(REPO / "configs" / "stage1" / "synthetic.yaml"), "train.batch_size=-1",
                           f"experiment.output_dir={out}"], capture_output=True, text=True, cwd=REPO)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "key 'train.batch_size' must be >= 1, got -1" in lines[0]
    assert not out.exists()
