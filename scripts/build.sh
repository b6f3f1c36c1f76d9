#!/usr/bin/env bash
# Configure and build kvbench (Release) into build/. CUDA targets are built when nvcc is found.
# Usage: [KVB_BUILD_DIR=build] [KVB_BUILD_TARGET="kvbench ..."] scripts/build.sh [extra cmake args...]
#   (default: every target, tests included; scripts/test.sh builds the CUDA emulator's tree with
#    KVB_BUILD_DIR=build-emu ... -DKVB_CUDA_EMULATE=ON)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
dir=${KVB_BUILD_DIR:-build}
log=$(mktemp)
if ! cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  echo "build.sh: CMake configuration failed (run scripts/setup.sh to install the dependencies)" >&2
  exit 1
fi
grep -E "^-- kvbench:" "$log" || true
rm -f "$log"
targets=()
for t in ${KVB_BUILD_TARGET:-}; do targets+=(--target "$t"); done
cmake --build "$dir" -j"$jobs" "${targets[@]}"
