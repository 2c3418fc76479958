"""The OpenMP defaults of the tools (collab_distill/threads.py): the policy and where it is applied.
Its effect on step times is measured by bench/stall.py, not here."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from collab_distill.threads import (
    COUNT_VARIABLES,
    WAIT_VARIABLES,
    physical_cores,
    running_elsewhere,
    set_thread_defaults,
    thread_defaults,
)

REPO = Path(__file__).resolve().parents[1]
TOOLS = sorted((REPO / "tools").glob("*.py"))


@pytest.mark.parametrize(("cores", "busy", "threads"), [(2, 0, "2"), (2, 1, "1"), (2, 5, "1"), (16, 2, "14"),
                                                   (1, 0, "1")])
def test_the_count_leaves_the_busy_cores_out_and_the_spinning_is_short(cores: int, busy: int, threads: str) -> None:
    assert thread_defaults({}, cores, busy) == {"OMP_NUM_THREADS": threads, "GOMP_SPINCOUNT": "1000"}
    # an empty variable is an unset one (libgomp reads it so too)
    assert thread_defaults({"OMP_NUM_THREADS": "", "GOMP_SPINCOUNT": ""}, cores, busy) == \
        thread_defaults({}, cores, busy)


@pytest.mark.parametrize(("env", "added"), [
    ({"OMP_NUM_THREADS": "2"}, {"GOMP_SPINCOUNT": "1000"}),
    ({"MKL_NUM_THREADS": "2"}, {"GOMP_SPINCOUNT": "1000"}),  # torch would read ours before it
    ({"OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_NUM_THREADS": "3"}),
    ({"OMP_WAIT_POLICY": "PASSIVE"}, {"OMP_NUM_THREADS": "3"}),
    ({"GOMP_SPINCOUNT": "10000"}, {"OMP_NUM_THREADS": "3"}),
    ({"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "passive"}, {}),
])
def test_a_setting_of_the_user_wins(env: dict[str, str], added: dict[str, str]) -> None:
    assert thread_defaults(env, 4, 1) == added


@pytest.mark.parametrize(("text", "busy"), [("0.52 0.58 0.59 1/467 5324", 0), ("2.10 1.20 0.80 3/467 5324", 2),
                                            ("9.00 9.00 9.00 12/467 5324", 11)])
def test_running_elsewhere_counts_the_runnable_tasks_but_the_caller(tmp_path: Path, text: str, busy: int) -> None:
    loadavg = tmp_path / "loadavg"
    loadavg.write_text(text + "\n")
    assert running_elsewhere(loadavg, samples=3, interval_s=0) == busy


@pytest.mark.parametrize("text", [None, "", "garbage", "0.1 0.1 0.1 x/12 5"])
def test_an_unreadable_loadavg_counts_nothing(tmp_path: Path, text: str | None) -> None:
    loadavg = tmp_path / "loadavg"
    if text is not None:
        loadavg.write_text(text)
    assert running_elsewhere(loadavg, samples=2, interval_s=0) == 0


def _topology(root: Path, siblings: list[str]) -> Path:
    """A fake ``/sys/devices/system/cpu`` whose CPU ``i`` has the sibling list ``siblings[i]``."""
    for cpu, text in enumerate(siblings):
        (root / f"cpu{cpu}" / "topology").mkdir(parents=True)
        (root / f"cpu{cpu}" / "topology" / "thread_siblings_list").write_text(text + "\n")
    return root


def test_hyperthreads_of_one_core_count_once(tmp_path: Path) -> None:
    sysfs = _topology(tmp_path, ["0,4", "1,5", "2,6", "3,7", "0,4", "1,5", "2,6", "3,7"])
    assert physical_cores(range(8), sysfs) == 4
    assert physical_cores({0, 4}, sysfs) == 1  # pinned to both threads of core 0
    assert physical_cores({0, 1, 5}, sysfs) == 2
    assert physical_cores({0, 1, 9}, sysfs) == 3  # a CPU sysfs does not describe: count logical CPUs


def test_set_thread_defaults_exports_them_before_torch_and_nothing_after() -> None:
    """In a fresh interpreter the defaults reach os.environ (what torch, DataLoader workers and
    subprocesses read); once torch is loaded (as in this test process) the call changes nothing."""
    code = ("import os, sys; from collab_distill.threads import set_thread_defaults; a = set_thread_defaults(); "
            "print(a); print({k: os.environ[k] for k in a} == a); print(set_thread_defaults() == {}); "
            "import torch; print(set_thread_defaults())")
    env = {k: v for k, v in os.environ.items() if k not in (*COUNT_VARIABLES, *WAIT_VARIABLES)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.splitlines()
    added = ast.literal_eval(out[0])
    assert added["GOMP_SPINCOUNT"] == "1000" and int(added["OMP_NUM_THREADS"]) >= 1
    assert out[1:] == ["True", "True", "{}"]
    assert "torch" in sys.modules
    before = dict(os.environ)
    assert set_thread_defaults() == {} and dict(os.environ) == before


def test_the_module_does_not_import_torch() -> None:
    """A tool imports it before anything else; if it pulled torch in, OpenMP would start unset."""
    code = ("import sys; from collab_distill.threads import set_thread_defaults; set_thread_defaults(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def _is_preamble(node: ast.stmt) -> bool:
    """The module docstring, ``from __future__ import ...`` or the import of the thread defaults."""
    return ((isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
            or (isinstance(node, ast.ImportFrom) and node.module in ("__future__", "collab_distill.threads")))


def _is_defaults_call(node: ast.stmt) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name) and node.value.func.id == "set_thread_defaults")


@pytest.mark.parametrize("tool", TOOLS, ids=lambda p: p.name)
def test_every_tool_sets_the_defaults_before_anything_else(tool: Path) -> None:
    body = ast.parse(tool.read_text()).body
    first = next(i for i, node in enumerate(body) if not _is_preamble(node))
    assert _is_defaults_call(body[first]), f"{tool.name}: line {body[first].lineno} runs before set_thread_defaults()"
