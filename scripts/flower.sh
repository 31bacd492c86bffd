#!/usr/bin/env bash
# Set everything up and run the Flower example: Flower's FedAvg, Flower's Krum
# (updates in the clear) and pgkernels' Krum in MPC (updates secret-shared to
# two aggregation servers), printing the comparison table. Arguments go to
# `python -m pgkernels.integrations.flower_example` (e.g. --rounds 5).
# MNIST is used when PGKERNELS_DATA (or --data-dir) has it, else the embedded digits.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${PGKERNELS_VENV:-$(pwd)/.venv}
exec "$VENV/bin/python" -m pgkernels.integrations.flower_example "$@"
