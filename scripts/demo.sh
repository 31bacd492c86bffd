#!/usr/bin/env bash
# Set everything up and run the main demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${PGKERNELS_VENV:-$(pwd)/.venv}
exec "$VENV/bin/python" -m pgkernels.demo "$@"
