#!/usr/bin/env bash
# Fresh machine -> results: install dependencies, build, generate a llama-like dump, run the quickstart.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
KVB_BUILD_TARGET=kvbench bash scripts/build.sh  # the tool only; scripts/test.sh builds the tests
mkdir -p data
if [ ! -f data/llama-like.h5 ]; then
  # Llama-3-8B shapes (32 heads, 8 KV heads, head_dim 128), 4 of its 32 layers, C = 4096 context tokens
  # plus 64 recorded decode queries per sequence, 2 sequences (one calibrates, one is evaluated).
  ./build/kvbench gen --model-like llama3-8b --layers 4 --tokens 4160 --queries 64 --out data/llama-like.h5
fi
./build/kvbench run configs/quickstart.json   # ends with the summary: the frontier of bits vs cosine, skipped cells
./build/kvbench report results/quickstart      # report.html (self-contained: open it in any browser) + report.md
echo
echo "Results: $(pwd)/results/quickstart/results.json and results.csv"
echo "Report:  file://$(pwd)/results/quickstart/report.html"
