"""The one command-line convention (collab_distill/cli.py), checked on every tool in tools/.

Every tool: ``--help`` shows an example; a bad input (a missing config file) is one ``error: ...`` line
on stderr and exit code 2; the config is ``--config FILE`` with positional overrides. The training
aliases are derived from the method registry, and tools/show_config.py prints every shipped config.
"""
from __future__ import annotations

import ast
import os
import runpy
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from collab_distill.cli import ToolParser, add_config_args, user_errors
from collab_distill.config import load_config
from collab_distill.errors import UserError
from collab_distill.methods.registry import METHODS, method_names

REPO = Path(__file__).resolve().parents[1]
Run = tuple[int, str, list[str]]  # a tool's exit code, stdout and non-empty stderr lines
TOOLS = sorted(p.name for p in (REPO / "tools").glob("*.py"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1",  # the tools run this checkout's library
       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
# the bad input of a tool that reads no config (its other required arguments are filled in by _bad_input)
NO_CONFIG = {"prepare_nuscenes.py": ["--dataroot", "{missing}"], "report.py": ["{missing}"]}
REQUIRED = {"make_synthetic.py": ["--out", "{out}"], "prepare_nuscenes.py": ["--out", "{out}"],
            "report.py": ["--out", "{out}"]}


def _run(tool: str, *argv: str) -> Run:
    """Run ``tools/<tool> argv`` in a process: exit code, stdout and the non-empty stderr lines."""
    proc = subprocess.run([sys.executable, str(REPO / "tools" / tool), *argv], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, [line for line in proc.stderr.splitlines() if line.strip()]


def _bad_input(tool: str, missing: Path, out: Path) -> list[str]:
    """The command line that gives ``tool`` the file ``missing`` as its config (or its input)."""
    argv = NO_CONFIG.get(tool, ["--config", "{missing}"]) + REQUIRED.get(tool, [])
    return [a.format(missing=missing, out=out) for a in argv]


def test_the_tools_are_the_documented_ones():
    """A new tool gets its row in docs/architecture.md; a method group gets its train_<group>.py alias."""
    architecture = (REPO / "docs" / "architecture.md").read_text()
    assert [t for t in TOOLS if f"`{t}`" not in architecture] == []
    groups = {entry.group for entry in METHODS.values()}
    assert {f"train_{g}.py" for g in groups} | {"train.py"} <= set(TOOLS)


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_sets_the_thread_defaults_first_and_reports_errors_only_through_the_cli_module(tool):
    source = (REPO / "tools" / tool).read_text()
    tree = ast.parse(source)
    body = [node for node in tree.body
            if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))  # the docstring
            and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")]
    assert isinstance(body[0], ast.ImportFrom) and body[0].module == "collab_distill.threads", tool
    assert ast.unparse(body[1]) == "set_thread_defaults()", tool           # before anything imports torch
    assert "from collab_distill.cli import" in source and "ArgumentParser(" not in source, tool  # ToolParser
    own_errors = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and str(n.value).startswith("error")]
    assert "sys.stderr" not in source and own_errors == [], tool  # expected errors go through cli.user_errors


@pytest.fixture(scope="module")
def tool_runs(tmp_path_factory) -> dict[str, tuple[Run, Run, Path, Path]]:
    """Per tool: its ``--help`` run, its bad-input run, the missing file and the output folder it was given.
    The tools run side by side: most of their time is importing torch."""
    root = tmp_path_factory.mktemp("tools")

    def both(tool: str) -> tuple[Run, Run, Path, Path]:
        missing, out = root / tool / "missing.yaml", root / tool / "out"
        return _run(tool, "--help"), _run(tool, *_bad_input(tool, missing, out)), missing, out

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(TOOLS, pool.map(both, TOOLS)))


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_shows_an_example_and_refuses_a_missing_config_in_one_line(tool, tool_runs):
    (code, out, err), (bad_code, bad_out, bad_err), missing, out_dir = tool_runs[tool]
    assert code == 0 and "Example" in out and "--debug" in out and err == [], (out, err)
    assert bad_code == 2 and len(bad_err) == 1, bad_err
    assert bad_err[0].startswith("error: ") and str(missing) in bad_err[0], bad_err
    assert not out_dir.exists() and bad_out == ""


def test_train_refuses_an_unknown_method_in_one_line_listing_the_valid_ones():
    code, _, err = _run("train.py", "--config", "configs/stage1/synthetic.yaml", "method.name=distill_everything")
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "distill_everything" in err[0], err
    assert [name for name in method_names() if name not in err[0]] == [], err


@pytest.mark.parametrize("group", sorted({entry.group for entry in METHODS.values()}))
def test_an_alias_refuses_another_groups_config_naming_what_it_runs(group):
    other = next(entry for entry in METHODS.values() if entry.group != group)
    code, _, err = _run(f"train_{group}.py", "--config", other.default_config)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert all(name in err[0] for name in method_names(group)) and "tools/train.py" in err[0], err


def test_train_without_a_config_is_one_line():
    code, _, err = _run("train.py")
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "--config" in err[0], err


def test_show_config_prints_every_shipped_config_so_that_it_loads_back(tmp_path, capsys):
    show = runpy.run_path(str(REPO / "tools" / "show_config.py"))["main"]
    files = sorted((REPO / "configs").rglob("*.yaml"))
    assert len(files) >= 15
    for path in files:
        show(["--config", str(path)])
        (tmp_path / "printed.yaml").write_text(capsys.readouterr().out)
        expected = load_config(path)
        assert load_config(tmp_path / "printed.yaml", schema=type(expected)) == expected, path
    show(["optim.lr=0.5", "--config", "configs/base.yaml"])
    assert yaml.safe_load(capsys.readouterr().out)["optim"]["lr"] == 0.5


def test_overrides_may_stand_anywhere_and_bad_arguments_are_one_line(capsys):
    parser = ToolParser("doc")
    add_config_args(parser)
    parser.add_argument("--flag", action="store_true")
    args = parser.parse_args(["a=1", "--config", "configs/base.yaml", "b=[x,y]", "--flag", "c=3"])
    assert (args.config, args.overrides, args.flag, args.debug) == ("configs/base.yaml", ["a=1", "b=[x,y]", "c=3"],
                                                                    True, False)
    for argv, message in ((["--config", "configs/base.yaml", "--nope"], "error: unrecognized arguments: --nope"),
                          (["--config", "configs/nope.yaml"], "error: argument --config: configs/nope.yaml: config "
                                                              "file not found")):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(argv)
        err = capsys.readouterr().err.splitlines()
        assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith(message), err


def test_user_errors_is_one_line_or_the_traceback_with_debug(capsys):
    with pytest.raises(SystemExit) as exit_info, user_errors():
        raise UserError("configs/x.yaml: something is wrong")
    assert exit_info.value.code == 2 and capsys.readouterr().err == "error: configs/x.yaml: something is wrong\n"
    with pytest.raises(UserError), user_errors(debug=True):
        raise UserError("shown with its traceback")
    with pytest.raises(KeyError), user_errors():  # a bug keeps its traceback
        raise KeyError("bug")
