#!/usr/bin/env bash
# GPU benchmark (issue 3; README "Performance"): builds with the CUDA backend, runs the parity self-test
# (CUDA vs CPU for every codec with a CUDA backend, 32k and 128k contexts included), measures the device's
# copy bandwidth, then sweeps exact fp16 attention, the baseline codecs, balancekv/uniform and the eviction codecs at C = 4k, 32k and 128k tokens,
# head_dim 128 (Llama-3-8B shapes: 32 query heads, 8 KV heads, one layer, 16 decode queries), timed with
# CUDA events, and prints achieved bytes/s against the copy bandwidth.
# Usage: scripts/bench_gpu.sh [contexts...]   (default: 4096 32768 131072)
# On a lent GPU machine that cannot build kvbench (no Debian packages there): scripts/device_bundle.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${KVB_BUILD_DIR:-build}
contexts=("$@")
[ ${#contexts[@]} -gt 0 ] || contexts=(4096 32768 131072)
if [ ! -x "$build/kvbench" ] || [ ! -x "$build/tests/test_gpu" ]; then
  KVB_BUILD_TARGET= bash scripts/build.sh
fi
if ! "$build/kvbench" list --json | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if any("cuda" in c["backends"] for c in d["codecs"]) else 1)'; then
  echo "bench_gpu: this build has no CUDA backend (nvcc not found at configure time)" >&2
  exit 4
fi
mkdir -p data results
# A parity failure does not stop the sweep (one device session should bring back every figure); the script
# exits 1 at the end instead. The full selftest table goes to results/selftest-cuda.txt.
status=0
echo "== parity: kvbench selftest --device cuda --full (table: results/selftest-cuda.txt)"
"$build/kvbench" selftest --device cuda --full >results/selftest-cuda.txt 2>&1 || status=1
grep -E "^selftest|FAIL" results/selftest-cuda.txt || tail -n 5 results/selftest-cuda.txt
echo "== parity: GoogleTest suite (label gpu)"
"$build/tests/test_gpu" --gtest_brief=1 || status=1
echo "== device copy bandwidth"
bw_line=$("$build/kvbench" membw --device cuda --mib 1024)
echo "$bw_line"
bw=$(echo "$bw_line" | sed -E 's/.*: ([0-9.]+) GB\/s.*/\1/')
for C in "${contexts[@]}"; do
  f=data/bench-gpu-c$C-obs32.h5
  [ -f "$f" ] || "$build/kvbench" gen --model-like llama3-8b --layers 1 --sequences 1 --tokens $((C + 16)) --queries 16 --no-ref-out --out "$f"
  cat > results/bench-gpu-c$C.json <<JSON
{"name": "bench-gpu-c$C", "datasets": [{"path": "../$f", "max_queries": 16}],
 "codecs": [{"codec": "fp16"}, {"codec": "fp8"}, {"codec": "int", "bits": [3, 5, 9]}, {"codec": "kivi", "bits": [3, 5]},
   {"codec": "balancekv", "bits": [4]}, {"codec": "uniform", "bits": [4]},
   {"codec": "streamingllm", "bits": [4]}, {"codec": "snapkv", "bits": [4]}, {"codec": "adakv", "bits": [4]}],
 "metrics": {"topk": 32}, "device": "cuda", "repeats": 20, "min_time_s": 0.5, "seed": 1}
JSON
  "$build/kvbench" run results/bench-gpu-c$C.json -q --device cuda --output results/bench-gpu-c$C >/dev/null
  python3 - "results/bench-gpu-c$C/results.json" "$bw" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
bw = float(sys.argv[2]) * 1e9
ds = d["datasets"][0]
ref = ds.get("reference_throughput_cuda") or ds["reference_throughput"]
print(f"\nC = {ref['context_len']}, head_dim 128, {ref['queries']} queries (32 heads x 16), device {ref.get('device_name', ref['device'])}")
print(f"reference (exact fp16 attention): {ref['attend_queries_per_s']['median']:.0f} queries/s, "
      f"{ref['attend_bytes_per_s']['median']/1e9:.1f} GB/s = {ref['attend_bytes_per_s']['median']/bw:.2f} of copy bandwidth")
print(f"{'label':30s} {'dev':4s} {'bits':>5s} {'queries/s':>10s} {'GB/s':>7s} {'of copy bw':>10s} {'vs fp16':>8s} {'encode Mtok/s':>13s}")
for c in d["cells"]:
    t = c.get("throughput")
    if c["status"] != "ok" or not t:
        print(f"{c['label'][:30]:30s} {c['status']}: {c.get('reason', '')}")
        continue
    q = t["attend_queries_per_s"]["median"]
    b = t["attend_bytes_per_s"]["median"]
    print(f"{c['label'][:30]:30s} {c['device']:4s} {c['storage']['bits_per_element']:5.2f} {q:10.0f} {b/1e9:7.1f} {b/bw:10.2f} "
          f"{t.get('attend_speedup_vs_fp16', 0):8.2f} {t['encode_tokens_per_s']['median']/1e6:13.1f}")
PY
done
if [ "$status" -ne 0 ]; then
  echo "bench_gpu: a parity check failed (see above and results/selftest-cuda.txt)" >&2
fi
exit "$status"
