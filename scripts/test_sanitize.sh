#!/usr/bin/env bash
# The unit tests under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/, KVB_ASAN_BUILD_DIR): every
# library and test compiled with -fsanitize=address,undefined -fno-sanitize-recover=undefined at -O1 -g, then
# ctest there (any report fails its test). Then, unless KVB_SKIP_EMU=1, the GPU parity suite on the CUDA
# emulator with the kernels under ASan (build-emu-asan/: -DKVB_CUDA_EMULATE=ON -DKVB_EMU_ASAN=ON).
#   bash scripts/test_sanitize.sh                 everything
#   bash scripts/test_sanitize.sh -L io           extra arguments go to ctest (labels: core io run ...)
# KVB_ASAN_CXX=clang++ builds with clang (default: the system compiler, g++); KVB_ASAN_TARGETS limits the build
# (e.g. "kvbench test_io test_run test_capture test_e2e test_report" with -L 'io|run|capture|e2e|report').
# KVB_ASAN_FUZZ=1: one clang build for both, with the fuzz targets too (-DKVB_FUZZ=ON); then
# KVB_FUZZ_BUILD_DIR=build-asan bash scripts/fuzz.sh --smoke reuses its objects instead of building build-fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
dir="${KVB_ASAN_BUILD_DIR:-build-asan}"
launcher=()
if command -v ccache >/dev/null 2>&1; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache); fi
compiler=()
if [ -n "${KVB_ASAN_CXX:-}" ]; then compiler=(-DCMAKE_CXX_COMPILER="$KVB_ASAN_CXX"); fi
if [ "${KVB_ASAN_FUZZ:-0}" = 1 ]; then compiler=(-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DKVB_FUZZ=ON); fi
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" -DKVB_SANITIZE=address,undefined -DKVB_ENABLE_CUDA=OFF \
  "${compiler[@]}" "${launcher[@]}" >/dev/null
# shellcheck disable=SC2086
ninja -C "$dir" -j"$jobs" ${KVB_ASAN_TARGETS:-}
# Leaks fail too; HDF5's and OpenMP's process-lifetime allocations are not leaks of kvbench's (suppressions).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$PWD/tests/sanitize/lsan.supp:print_suppressions=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
(cd "$dir" && ctest --output-on-failure -j"$jobs" -LE 'record|plots' "$@")
if [ "${KVB_SKIP_EMU:-0}" != 1 ]; then
  echo "== GPU parity suite on the CUDA emulator, kernels under ASan (build-emu-asan/) =="
  KVB_BUILD_DIR=build-emu-asan KVB_BUILD_TARGET="test_gpu" bash scripts/build.sh -DKVB_CUDA_EMULATE=ON -DKVB_EMU_ASAN=ON
  (cd build-emu-asan && ASAN_OPTIONS=detect_leaks=0 ctest --output-on-failure -j"$jobs" -L gpu "$@")
fi
