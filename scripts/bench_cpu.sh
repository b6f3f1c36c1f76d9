#!/usr/bin/env bash
# CPU throughput benchmark (README "Performance"): memory read bandwidth, then exact fp16 attention and
# every baseline codec, the token-selection and the token-eviction codecs, and issue 17's quantizers (Hadamard-rotated
# int/kivi, the microscaling formats, turboquant, polarquant, kvquant) and the sketch / lookup codecs (qjl, h1b, lookat)
# at C = 4096 and C = 32768, each with 1 and 16 query positions per attend call (config positions_per_call: 4 and
# 64 queries per KV head per call — a decode step, and a batched one), and at C = 131072 with 1 position for the
# quantizers (head_dim 128, Llama-3-8B shapes, one layer), as ratios against the fp16 row measured in the same run, with each cell's
# roofline fraction (docs/metrics.md §7: the run measures the machine's read bandwidth and fp32 peak first). The 4k and
# 32k dumps have two sequences: the first calibrates (lookat's codebooks, kvquant's levels), the second is timed; the
# 128k dump has one ("calibration": {"sequences": 0}; no calibrated codec runs there). Usage: scripts/bench_cpu.sh [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-0}
build=${KVB_BUILD_DIR:-build}
[ -x "$build/kvbench" ] || bash scripts/build.sh
mkdir -p data results
"$build/kvbench" membw --mib 2048 --threads "$threads"
all_codecs='{"codec": "fp16"}, {"codec": "fp8"}, {"codec": "int", "bits": [3, 5, 9]}, {"codec": "kivi", "bits": [3, 5]},
   {"codec": "balancekv", "bits": [4]}, {"codec": "uniform", "bits": [4]},
   {"codec": "streamingllm", "bits": [4]}, {"codec": "h2o", "bits": [4]}, {"codec": "snapkv", "bits": [4]},
   {"codec": "pyramidkv", "bits": [4]}, {"codec": "adakv", "bits": [4]},
   {"codec": "int", "bits": [5], "params": {"rotate": "hadamard"}}, {"codec": "kivi", "bits": [3], "params": {"rotate": "hadamard"}},
   {"codec": "nvfp4"}, {"codec": "mxfp4"}, {"codec": "mxfp8"},
   {"codec": "turboquant", "preset": "2.5bit"}, {"codec": "turboquant", "preset": "3.5bit"},
   {"codec": "polarquant"}, {"codec": "kvquant", "preset": "paper-3bit-1%"},
   {"codec": "qjl", "preset": "paper"}, {"codec": "h1b", "preset": "paper"}, {"codec": "lookat", "preset": "paper-4"}'
long_codecs='{"codec": "fp16"}, {"codec": "fp8"}, {"codec": "int", "bits": [3, 5, 9]}, {"codec": "kivi", "bits": [3, 5]},
   {"codec": "streamingllm", "bits": [4]}, {"codec": "qjl", "preset": "paper"}, {"codec": "h1b", "preset": "paper"}'
for cp in 4096:1 4096:16 32768:1 32768:16 131072:1; do
  C=${cp%:*} P=${cp#*:}
  codecs=$all_codecs
  [ "$C" -gt 32768 ] && codecs=$long_codecs  # 128k: the quantizers and sketches (each encode holds the 1 GiB layer)
  seqs=2 cal=1
  [ "$C" -gt 32768 ] && seqs=1 cal=0
  f=data/bench-c$C-obs32-s$seqs.h5  # with the prompt's 32 observation queries (h2o and the snapkv family score with them)
  [ -f "$f" ] || "$build/kvbench" gen --model-like llama3-8b --layers 1 --sequences $seqs --tokens $((C + 16)) --queries 16 --no-ref-out --out "$f"
  name=bench-c$C-p$P
  cat > results/$name.json <<JSON
{"name": "$name", "datasets": [{"path": "../$f", "max_queries": 16}],
 "codecs": [$codecs],
 "calibration": {"sequences": $cal},
 "metrics": {"topk": 32}, "threads": $threads, "repeats": 5, "min_time_s": 1.0, "positions_per_call": $P, "seed": 1}
JSON
  "$build/kvbench" run results/$name.json -q --output results/$name >/dev/null
  python3 - "results/$name/results.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
ref = d["datasets"][0]["reference_throughput"]
C = ref["context_len"]
print(f"\nC = {C}, head_dim 128, {ref['queries']} queries (32 heads x 16), {ref.get('queries_per_call', '?')} per attend call, "
      f"threads {d['run']['threads']}")
fp16 = next(c for c in d["cells"] if c["codec"] == "fp16")["throughput"]["attend_queries_per_s"]["median"]
print(f"reference row (exact fp16 attention, measured again after the cells): "
      f"{ref['attend_queries_per_s']['median']:.1f} queries/s, {ref['attend_bytes_per_s']['median']/1e9:.2f} GB/s")
roof = d["environment"].get("roofline")
if roof:
    print(f"roofline (this run): read {roof['read_bytes_per_s']/1e9:.1f} GB/s, fp32 {roof['fp32_flops_per_s']/1e9:.0f} GFLOP/s "
          f"({roof['fp32_path']}), int8 {roof['int8_ops_per_s']/1e9:.0f} GOP/s ({roof['int8_path']}); "
          f"fused attend kernels {d['environment'].get('fused_attend_kernel')}")
print(f"{'label':18s} {'bits':>5s} {'queries/s':>10s} {'p95 q/s':>9s} {'GB/s scanned':>12s} {'vs fp16 cell':>12s} "
      f"{'roofline':>8s} {'bound':>12s} {'encode Mtok/s':>13s}")
for c in d["cells"]:
    t = c.get("throughput")
    if not t:
        print(f"{c['label']:18s} {c['status']}: {c.get('reason', '')[:150]}")
        continue
    q = t["attend_queries_per_s"]
    print(f"{c['label']:18s} {c['storage']['bits_per_element']:5.2f} {q['median']:10.1f} {q['p95']:9.1f} "
          f"{t['attend_bytes_per_s']['median']/1e9:12.2f} {q['median']/fp16:12.2f} {t.get('roofline_fraction', 0):8.2f} "
          f"{t.get('roofline_bound', '-'):>12s} {t['encode_tokens_per_s']['median']/1e6:13.2f}")
for c in d["cells"]:
    r = c.get("codec_report", {})
    if "walk_tokens_per_s" in r:
        print(f"{c['label']}: walk {r['walk_tokens_per_s']/1e3:.1f} k tokens/s ({r['walk_tokens']} tokens entering a halving, all encodes)")
PY
  # The "what a user would write" row: float32 numpy (OpenBLAS) on the same dump and shapes.
  py=""
  for p in python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c "import h5py, numpy" >/dev/null 2>&1; then py=$p; break; fi
  done
  if [ -n "$py" ]; then
    "$py" scripts/bench_numpy_attention.py "$f" --queries 16 --positions-per-call "$P" --threads "${threads/#0/$(nproc)}" --min-time 1
  else
    echo "numpy row skipped: no python3 with numpy and h5py (scripts/setup.sh installs them)"
  fi
done
