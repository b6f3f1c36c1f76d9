#!/usr/bin/env bash
# Fresh machine -> all tests: install dependencies, build (CUDA targets too when nvcc exists), run ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
cd build
ctest --output-on-failure -j"$(nproc 2>/dev/null || echo 2)" "$@"
