#!/usr/bin/env bash
# Configure and build kvbench (Release) into build/. CUDA targets are built when nvcc is found.
# Usage: scripts/build.sh [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" | grep -E "^-- kvbench:|Error|error" || true
cmake --build build -j"$jobs"
