#!/usr/bin/env bash
# The main job: set up .venv if needed (idempotent), then run the pipeline on the embedded default
# (the synthetic nuScenes-format world). Arguments go to tools/demo.py (see --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg
exec "${VENV:-$ROOT/.venv}/bin/python" tools/demo.py "$@"
