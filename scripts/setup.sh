#!/usr/bin/env bash
# Create or reuse the project's virtual environment (.venv) on a CPU machine.
# Idempotent: when .venv matches the pins (a stamp of the files below), it returns in about a second.
# Override the interpreter with PYTHON=..., the location with VENV=... . CUDA machines: docs/install.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
STAMP_FILES=("$ROOT/constraints.txt" "$ROOT/requirements.txt" "$ROOT/scripts/setup.sh"
             "$ROOT/scripts/env/_tv_cpu_shim.py" "$ROOT/scripts/env/_libusb_preload.py" "$ROOT/pyproject.toml")
STAMP="$(cat "${STAMP_FILES[@]}" | sha256sum | cut -c1-16)"

if [[ -f "$VENV/.collab_distill_stamp" && "$(cat "$VENV/.collab_distill_stamp")" == "$STAMP" ]]; then
  exit 0
fi
echo "[setup] building $VENV (one-time, about 2 minutes; see docs/install.md)" >&2
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade "pip==25.3"
# torch first: 2.13.0 resolves to the machine's local CPU wheel; the constraints keep it there.
"$PY" -m pip install -q -c "$ROOT/constraints.txt" torch==2.13.0
"$PY" -m pip install -q -c "$ROOT/constraints.txt" -r "$ROOT/requirements.txt"
"$PY" -m pip install -q -c "$ROOT/constraints.txt" --no-deps -e "$ROOT"

SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cp "$ROOT/scripts/env/_tv_cpu_shim.py" "$SITE/"
echo "import _tv_cpu_shim" > "$SITE/zz_tv_cpu_shim.pth"

# open3d needs libusb-1.0.so.0 (Debian libusb-1.0-0).
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null; then
    echo "[setup] installing Debian libusb-1.0-0 for open3d" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null
  else
    echo "[setup] not root: unpacking libusb-1.0-0 into $VENV/opt/libusb" >&2
    TMP="$(mktemp -d)"
    (cd "$TMP" && apt-get download libusb-1.0-0 >/dev/null && dpkg -x libusb-1.0-0_*.deb x)
    mkdir -p "$VENV/opt/libusb"
    cp -L "$TMP"/x/usr/lib/*/libusb-1.0.so.0 "$VENV/opt/libusb/"
    rm -rf "$TMP"
    cp "$ROOT/scripts/env/_libusb_preload.py" "$SITE/"
    echo "import _libusb_preload" > "$SITE/zz_libusb_preload.pth"
  fi
fi
# Fail now, not in the middle of a run, if the stack does not import.
"$PY" - <<'PY'
import open3d, spconv.pytorch, timm, torch, nuscenes, accelerate  # noqa: F401
assert torch.__version__.startswith("2.13.0"), torch.__version__
PY
echo "$STAMP" > "$VENV/.collab_distill_stamp"
echo "[setup] done" >&2
