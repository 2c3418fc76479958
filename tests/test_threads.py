"""The OpenMP defaults of the tools (collab_distill/threads.py): the policy and where it is applied.
Its effect on step times is measured by bench/stall.py, not here."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from collab_distill.threads import set_thread_defaults, thread_defaults

REPO = Path(__file__).resolve().parents[1]
TOOLS = sorted((REPO / "tools").glob("*.py"))


def test_a_clean_environment_gets_the_passive_wait_policy_only() -> None:
    assert thread_defaults({}) == {"OMP_WAIT_POLICY": "PASSIVE"}
    # the thread count is the user's (or torch's default): set or not, only the waiting is added
    assert thread_defaults({"OMP_NUM_THREADS": "1"}) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert thread_defaults({"OMP_WAIT_POLICY": ""}) == {"OMP_WAIT_POLICY": "PASSIVE"}  # empty = unset


@pytest.mark.parametrize("env", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_WAIT_POLICY": "passive"},
                                 {"GOMP_SPINCOUNT": "10000"}])
def test_a_wait_setting_of_the_user_wins(env: dict[str, str]) -> None:
    assert thread_defaults(env) == {}


def test_set_thread_defaults_exports_them_and_warns_once_torch_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)  # restored after the test
    assert "torch" in sys.modules  # conftest imports it: too late for OpenMP, so the call must say so
    with pytest.warns(UserWarning, match="after torch was imported"):
        assert set_thread_defaults() == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"  # what subprocesses and DataLoader workers inherit
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert set_thread_defaults() == {}
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


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
