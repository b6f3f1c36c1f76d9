#!/usr/bin/env bash
# Configure and build kvbench (Release) into build/. CUDA targets are built when nvcc is found.
# Usage: [KVB_BUILD_TARGET=kvbench] scripts/build.sh [extra cmake args...]  (default: every target, tests included)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" | grep -E "^-- kvbench:|Error|error" || true
cmake --build build -j"$jobs" ${KVB_BUILD_TARGET:+--target "$KVB_BUILD_TARGET"}
