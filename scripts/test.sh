#!/usr/bin/env bash
# Set everything up and run the whole test suite: the C++ core through CMake
# and ctest (unit tests, the example, and install_consumer: cmake --install
# into a fresh prefix, then examples/cpp built against it with
# find_package(pgkernels REQUIRED) and run; cuda_compile: nvcc compiles csrc/cuda/, skipped
# without nvcc), then the Python suite through pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${PGKERNELS_VENV:-$(pwd)/.venv}

echo "== C++ core (cmake + ctest, including the cmake --install / find_package consumer) =="
cmake -S . -B build/core -DCMAKE_BUILD_TYPE=Release -DPGKERNELS_PYTHON="$VENV/bin/python" >/dev/null
cmake --build build/core -j "${MAX_JOBS:-2}" >/dev/null
ctest --test-dir build/core --output-on-failure

echo "== Python (pytest) =="
if [ -z "${PGKERNELS_DATA:-}" ] && [ -d ../shared/datasets ]; then
  export PGKERNELS_DATA=$(cd ../shared/datasets && pwd)
fi
# Two pytest workers (pytest-xdist), a test file each at a time (its module
# fixtures run once): most of a test's time is party processes starting up
# and waiting on each other, which overlaps well even on 2 cores.
# PGKERNELS_TEST_WORKERS=0 runs in this process.
exec "$VENV/bin/python" -m pytest -q tests -n "${PGKERNELS_TEST_WORKERS:-2}" --dist loadfile --durations=25 "$@"
