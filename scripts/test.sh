#!/usr/bin/env bash
# The test command: set up .venv if needed (idempotent), then run the CPU test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k geometry
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg
exec "${VENV:-$ROOT/.venv}/bin/python" -m pytest -q "$@"
