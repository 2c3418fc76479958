#!/usr/bin/env bash
# The test command: set up .venv if needed (idempotent), run `ruff check` (rules in pyproject.toml; fails
# fast, before any test), then the CPU test suite. Extra arguments go to pytest, e.g. scripts/test.sh -k geometry
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg
"${VENV:-$ROOT/.venv}/bin/ruff" check --quiet .
exec "${VENV:-$ROOT/.venv}/bin/python" -m pytest -q "$@"
