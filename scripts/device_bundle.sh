#!/usr/bin/env bash
# Packs what the GPU checks need into .devbundle/ so that a session lent a GPU machine can run them there in
# one call. That machine (see /work/.library/device) has nvcc and CMake but none of kvbench's Debian
# dependencies (HDF5, fmt, CLI11, nlohmann-json, GoogleTest, Eigen) and no network, so it cannot build a clean
# clone; instead this script takes the nvcc build made here (build/: sm_80 and sm_90 kernels, static cudart)
# and copies kvbench, tests/test_gpu and every shared library they load except glibc's own into the bundle,
# with .devbundle/run.sh, which runs scripts/bench_gpu.sh on those binaries and writes its log to $OUT.
#
#   bash scripts/device_bundle.sh            # here (brings build/'s kvbench and test_gpu up to date first)
#   device run: carry [".devbundle"], command "bash .devbundle/run.sh", timeout_s 540
#
# .devbundle/ is kept out of git through .git/info/exclude (a local file); the bundle is about 30 MiB of the
# device tool's 64 MiB working-tree limit.
set -euo pipefail
cd "$(dirname "$0")/.."
KVB_BUILD_TARGET="kvbench test_gpu" bash scripts/build.sh  # incremental: the bundle is this checkout's code
if ! ./build/kvbench --version | grep -q ", CUDA)"; then
  echo "device_bundle: build/ has no CUDA backend (nvcc not found at configure time): $(./build/kvbench --version)" >&2
  exit 4
fi
grep -qx '/.devbundle/' .git/info/exclude 2>/dev/null || echo '/.devbundle/' >>.git/info/exclude
rm -rf .devbundle
mkdir -p .devbundle/lib .devbundle/build/tests
cp build/kvbench .devbundle/build/
cp build/tests/test_gpu .devbundle/build/tests/
strip --strip-debug .devbundle/build/kvbench .devbundle/build/tests/test_gpu
# Shared libraries: everything ldd resolves except the C library's own (those must match the machine's kernel
# interface and loader; glibc is backward compatible, and the machine's is not older than Debian 12's).
glibc='^(libc|libm|libpthread|libdl|librt|libresolv)\.so|^ld-linux'
ldd build/kvbench build/tests/test_gpu | awk '/=> \// {print $3}' | sort -u | while read -r lib; do
  basename "$lib" | grep -qE "$glibc" || cp -L "$lib" .devbundle/lib/
done
cat >.devbundle/run.sh <<'EOF'
#!/usr/bin/env bash
# Runs on the lent GPU machine, from the repository root (made by scripts/device_bundle.sh).
set -uo pipefail
export LD_LIBRARY_PATH="$PWD/.devbundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
out=${OUT:-/tmp/kvb-device-out}
mkdir -p "$out"
{
  echo "== $(date -u +%FT%TZ) $(uname -n)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv || true
  ./.devbundle/build/kvbench --version
  KVB_BUILD_DIR=.devbundle/build bash scripts/bench_gpu.sh "$@"
  echo "== bench_gpu.sh exit $?"
} 2>&1 | tee "$out/bench_gpu.log"
cp results/selftest-cuda.txt "$out/" 2>/dev/null
for d in results/bench-gpu-c*/; do
  [ -f "$d/results.json" ] && cp "$d/results.json" "$out/$(basename "$d").json"
done
exit 0
EOF
chmod +x .devbundle/run.sh
# Every library the binaries need must now resolve inside the bundle or to glibc.
missing=$(LD_LIBRARY_PATH="$PWD/.devbundle/lib" ldd .devbundle/build/kvbench .devbundle/build/tests/test_gpu |
  awk '/=> \// && $3 !~ /\.devbundle\/lib\// {print $1}' |
  grep -vE "$glibc" || true)
if [ -n "$missing" ]; then
  echo "device_bundle: not bundled: $missing" >&2
  exit 1
fi
du -sh .devbundle | awk '{print "device_bundle: .devbundle/ " $1 " (carry it; run: bash .devbundle/run.sh)"}'
