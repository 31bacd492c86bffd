#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv and build the
# compiled extension. Idempotent: a second run only checks stamps.
#   PGKERNELS_VENV   where the venv lives (default: .venv in the repo)
#   PYTHON           interpreter used to create it (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${PGKERNELS_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"

hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

deps_hash=$(hash_of requirements.txt requirements-dev.txt scripts/setup.sh)
if [ "$(cat "$VENV/.pgk-deps" 2>/dev/null)" != "$deps_hash" ]; then
  echo "[setup] installing dependencies"
  "$VPY" -m pip install -q --upgrade pip setuptools wheel 2>&1 | grep -v -i "warning" || true
  "$VPY" -m pip install -q -r requirements.txt -r requirements-dev.txt
  # CrypTen's metadata asks for 'sklearn' and torchvision; its real runtime
  # deps are in requirements.txt.
  "$VPY" -m pip install -q --no-deps crypten==0.4.1
  echo "$deps_hash" > "$VENV/.pgk-deps"
fi

src_hash=$(hash_of setup.py $(find csrc -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) | sort))
if [ "$(cat "$VENV/.pgk-build" 2>/dev/null)" != "$src_hash" ] || ! "$VPY" -c "import pgkernels._C" 2>/dev/null; then
  echo "[setup] building the pgkernels extension (a minute on 2 cores)"
  MAX_JOBS=${MAX_JOBS:-2} "$VPY" -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | grep -v -i "warning" || true
  "$VPY" -c "import pgkernels._C" || { echo "[setup] extension build failed" >&2; exit 1; }
  echo "$src_hash" > "$VENV/.pgk-build"
fi
echo "[setup] ready: $VPY"
