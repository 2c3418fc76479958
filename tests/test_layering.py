"""Layers import downwards: ``collab_distill`` never imports ``data_prep`` (``data_prep`` may import the
library, which is how the tools hand the synthetic world to the demo and the ASVP study), and no two
``collab_distill`` modules import each other, directly or around a cycle, when they load."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "collab_distill"


def _modules() -> dict[str, Path]:
    """Every module of ``collab_distill`` by dotted name (a package by its ``__init__.py``)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement names (``from a import b``: ``a`` and ``a.b``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".")[:len(module.split(".")) - node.level + is_package]
        base = ".".join(anchor + ([base] if base else []))
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def _imports(path: Path, module: str, load_time_only: bool) -> set[str]:
    """Names imported by ``path``: all of them, or only those run when it loads (not inside a
    function, not under ``if TYPE_CHECKING:``)."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST) -> None:
        if load_time_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if load_time_only and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update(_imported(node, module, is_package))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def _load_graph() -> dict[str, set[str]]:
    """Module -> the ``collab_distill`` modules it imports when it loads. Importing ``a.b.c`` also
    runs ``a.b``'s ``__init__``, unless the importer is inside ``a.b`` (then it is already loading)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        targets = set()
        for imported in _imports(path, name, load_time_only=True):
            parts = imported.split(".")
            targets |= {imported} | {".".join(parts[:i]) for i in range(1, len(parts))} - own
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def test_no_collab_distill_source_imports_data_prep() -> None:
    offenders = [f"{path.relative_to(REPO)}: {name}" for module, path in _modules().items()
                 for name in sorted(_imports(path, module, load_time_only=False))
                 if name == "data_prep" or name.startswith("data_prep.")]
    assert not offenders, offenders


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
])
def test_cycle_finder(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert _cycles(graph) == expected


def test_import_scan_resolves_relative_imports_and_skips_what_does_not_run_at_load(tmp_path: Path) -> None:
    path = tmp_path / "__init__.py"
    path.write_text("from . import a\nfrom .b import c\nimport x.y\nfrom typing import TYPE_CHECKING\n"
                    "if TYPE_CHECKING:\n    import t\nelse:\n    import e\ndef f():\n    import late\n")
    at_load = _imports(path, "pkg.sub", load_time_only=True)
    assert at_load == {"pkg.sub", "pkg.sub.a", "pkg.sub.b", "pkg.sub.b.c", "x.y", "e", "typing", "typing.TYPE_CHECKING"}
    assert _imports(path, "pkg.sub", load_time_only=False) == at_load | {"t", "late"}


def test_import_graph_follows_parent_packages_but_not_the_importers_own() -> None:
    graph = _load_graph()
    assert "collab_distill.defense.asvp" in graph["collab_distill.defense"]              # from .asvp import ...
    assert "collab_distill.defense" not in graph["collab_distill.defense.asvp"]
    assert "collab_distill.defense.restoration" in graph["collab_distill.defense.study"]  # its __init__ runs


def test_no_import_cycle_between_collab_distill_modules() -> None:
    assert _cycles(_load_graph()) == []


@pytest.mark.slow   # imports torch, timm and spconv: 15-30 s on 2 shared cores
def test_importing_every_module_never_loads_data_prep() -> None:
    script = ("import json, pkgutil, sys, collab_distill\n"
              "names = [m.name for m in pkgutil.walk_packages(collab_distill.__path__, 'collab_distill.')]\n"
              "for name in names: __import__(name)\n"
              "loaded = [m for m in sys.modules if m.split('.')[0] == 'data_prep']\n"
              "print(json.dumps({'names': names, 'data_prep': loaded}))\n")
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.splitlines()[-1])
    assert set(result["names"]) == set(_modules()) - {"collab_distill"}     # every module was imported
    assert result["data_prep"] == []
