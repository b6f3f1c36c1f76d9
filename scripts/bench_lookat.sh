#!/usr/bin/env bash
# LOOKAT benchmark (README "Performance", lookat paragraph):
#  1. tests/bench_lookat_faiss (tables on stdout, the same figures in bench_lookat_faiss.json): table-sum
#     scoring throughput against faiss IndexPQ search with the same codebooks, codes and queries (1 and 2
#     threads, one run), and fidelity against context length on synthetic post-RoPE keys (codebooks
#     calibrated on positions 0..32k, or on 0..1k only);
#  2. the harness end to end: `kvbench gen` Llama-2-shaped dumps (RoPE, outlier channels, sinks; 1 layer,
#     8 query / 2 KV heads, head_dim 128) at C = 1k, 4k, 16k, 32k, each `kvbench run` calibrating lookat on
#     the first sequence and evaluating the second, against kivi at the same 3-bit budget.
# Usage: bash scripts/bench_lookat.sh [BUILD_DIR=build] [OUT_DIR=results/bench_lookat]
# Needs bench_lookat_faiss (built when Debian libfaiss-dev is installed).
set -euo pipefail
build=${1:-build}
out=${2:-results/bench_lookat}
mkdir -p "$out"
export OMP_WAIT_POLICY=passive  # the 2-thread rows must not spin against each other on a small machine
"$build/tests/bench_lookat_faiss" --reps 21 --json "$out/bench_lookat_faiss.json" | tee "$out/bench_lookat_faiss.md"
for C in 1024 4096 16384 32768; do
  "$build/kvbench" gen -o "$out/ctx$C.h5" --model-like llama2-7b --layers 1 --heads 8 --kv-heads 2 \
    --tokens $((C + 64)) --queries 64 --sequences 2 --seed 5 >/dev/null
  cat >"$out/ctx$C.json" <<JSON
{
  "name": "lookat-ctx$C",
  "datasets": [{"path": "ctx$C.h5", "max_queries": 16}],
  "calibration": {"sequences": 1},
  "codecs": [
    {"codec": "lookat", "preset": "paper-2"},
    {"codec": "lookat", "preset": "paper-4"},
    {"codec": "lookat", "params": {"subspaces": 16}},
    {"codec": "lookat", "bits": [3]},
    {"codec": "kivi", "bits": [3]}
  ],
  "seed": 1, "repeats": 1, "min_time_s": 0.0
}
JSON
  "$build/kvbench" run "$out/ctx$C.json" -o "$out/ctx$C" --device cpu -q
done
python3 - "$out" <<'PY'
import csv, sys
out = sys.argv[1]
print("\n## Harness fidelity vs context length (kvbench gen llama2-7b-shaped, 1 layer, 2 KV heads)\n")
print("| C | label | b_eff | b_eff with codebooks | cosine | spearman | KL |")
print("|---|---|---|---|---|---|---|")
for C in (1024, 4096, 16384, 32768):
    for r in csv.DictReader(open(f"{out}/ctx{C}/results.csv")):
        print(f"| {C} | {r['label']} | {float(r['bits_per_element']):.3f} | {float(r['bits_per_element_with_fixed']):.3f} "
              f"| {float(r['cosine_mean']):.4f} | {float(r['spearman_mean']):.4f} | {float(r['kl_mean']):.4f} |")
PY
