#!/usr/bin/env bash
# Fresh machine -> all tests: install dependencies, build (CUDA targets too when nvcc exists), run ctest.
# Then the CUDA sources once more, built on kvbench's host emulator (src/kvb/cuda/emu, -DKVB_CUDA_EMULATE=ON,
# in build-emu/): the GPU parity suite (ctest -L gpu) executes every kernel on the CPU, so machines without a
# GPU check what the kernels compute, not only that nvcc accepts them. KVB_SKIP_EMU=1 leaves that pass out.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
bash scripts/setup.sh
bash scripts/build.sh
(cd build && ctest --output-on-failure -j"$jobs" "$@")
if [ "${KVB_SKIP_EMU:-0}" != 1 ]; then
  echo "== GPU parity suite on the CUDA emulator (build-emu/) =="
  KVB_BUILD_DIR=build-emu KVB_BUILD_TARGET="kvbench test_gpu" bash scripts/build.sh -DKVB_CUDA_EMULATE=ON
  (cd build-emu && ctest --output-on-failure -j"$jobs" -L gpu "$@")
fi
