#!/usr/bin/env bash
# plots (ctest): scripts/plot_results.py on a real results directory. Generates the tiny dump into a temp dir,
# runs a copy of configs/ci.json pointed at it, renders the plots and checks each PNG (magic bytes, size > 5 kB,
# plausible IHDR dimensions) and that the heat map has one row per ok cell; then a two-dataset run (one set
# of figures per dataset, file names with the dataset's slug) and the error exits (2 missing, 3 invalid);
# then the e2e figures (Δperplexity vs bits, proxy vs e2e KL per metric) on an e2e results.json: the fixture
# tests/plots/e2e_fixture.py writes, or a real `kvbench e2e` results directory named by KVB_E2E_RESULTS.
# Usage: run_plot_tests.sh PATH/TO/kvbench. Exits 77 (skipped) when /usr/bin/python3 lacks matplotlib
# (Debian: apt-get install python3-matplotlib; bash scripts/setup.sh installs it), a failure when CI=true.
set -euo pipefail
KVB=${1:?usage: run_plot_tests.sh PATH/TO/kvbench}
case "$KVB" in /*) ;; *) KVB="$PWD/$KVB" ;; esac
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=/usr/bin/python3
PLOT="$ROOT/scripts/plot_results.py"
if [ "${CI:-}" = "true" ]; then SKIP=1; else SKIP=77; fi
if [ ! -x "$PY" ] || ! "$PY" -c "import matplotlib" >/dev/null 2>&1; then
  echo "plots: SKIP: /usr/bin/python3 lacks matplotlib (apt-get install python3-matplotlib, or bash scripts/setup.sh)"
  exit "$SKIP"
fi
export MPLBACKEND=Agg MPLCONFIGDIR=${MPLCONFIGDIR:-$(mktemp -d)}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP" "$MPLCONFIGDIR"' EXIT
cd "$TMP"

fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# check_png FILE [WxH]: PNG magic, > 5 kB, IHDR width/height within 300..6000 px (exactly WxH when given).
check_png() {
  local f=$1 want=${2:-}
  if [ ! -f "$f" ]; then fail "$f was not written"; return; fi
  if ! "$PY" - "$f" "$want" <<'PY'; then fail "$f is not a plausible PNG"; else echo "ok  $(basename "$f")"; fi
import os, struct, sys
p, want = sys.argv[1], sys.argv[2]
b = open(p, "rb").read(33)
size = os.path.getsize(p)
if b[:8] != b"\x89PNG\r\n\x1a\n" or b[12:16] != b"IHDR":
    sys.exit(f"{p}: bad PNG signature or no IHDR")
w, h = struct.unpack(">II", b[16:24])
print(f"    {os.path.basename(p)}: {w}x{h}, {size} bytes")
if size <= 5000:
    sys.exit(f"{p}: only {size} bytes")
if not (300 <= w <= 6000 and 300 <= h <= 6000):
    sys.exit(f"{p}: implausible dimensions {w}x{h}")
if want and f"{w}x{h}" != want:
    sys.exit(f"{p}: {w}x{h}, expected {want}")
PY
}

# ---- one dataset: configs/ci.json against a fresh tiny dump
"$KVB" gen --model-like tiny --out "$TMP/ci-tiny.h5" >/dev/null
"$PY" - "$ROOT/configs/ci.json" "$TMP/ci-tiny.h5" "$TMP/ci.json" <<'PY'
import json, sys
cfg = json.load(open(sys.argv[1]))
cfg["datasets"][0]["path"] = sys.argv[2]
json.dump(cfg, open(sys.argv[3], "w"), indent=1)
PY
rc=0; "$KVB" run "$TMP/ci.json" --output "$TMP/res" -q || rc=$?
if [ "$rc" -ne 0 ]; then echo "kvbench run exited $rc"; exit 1; fi
n_ok=$("$PY" -c "import json,sys; print(sum(c['status']=='ok' for c in json.load(open(sys.argv[1]))['cells']))" "$TMP/res/results.json")
n_layers=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['datasets'][0]['shape']['n_layers'])" "$TMP/res/results.json")
echo "== one dataset: $n_ok ok cells, $n_layers layers"
if ! "$PY" "$PLOT" "$TMP/res" > out1.txt 2> err1.txt; then cat out1.txt err1.txt; fail "plot_results.py on one dataset"; fi
cat out1.txt
for f in fidelity_vs_bits throughput_vs_bits per_layer_cosine; do
  check_png "$TMP/res/$f.png"
  grep -qx "$TMP/res/$f.png" out1.txt || fail "$f.png path not printed"
done
grep -qx "per_layer_cosine: $n_ok rows x $n_layers layers" out1.txt ||
  fail "heat map should have $n_ok rows x $n_layers layers"

# --metric and --out
"$PY" "$PLOT" "$TMP/res" --metric rel_l2 --out "$TMP/plots" > out2.txt 2>&1 || { cat out2.txt; fail "--metric rel_l2 --out"; }
check_png "$TMP/plots/per_layer_rel_l2.png"
check_png "$TMP/plots/fidelity_vs_bits.png"
grep -qx "per_layer_rel_l2: $n_ok rows x $n_layers layers" out2.txt || fail "rel_l2 heat map rows"
# run results have no "e2e" key: no e2e figure, the run figures as before
if ls "$TMP"/res/e2e_* "$TMP"/plots/e2e_* >/dev/null 2>&1; then fail "e2e figures written for run results"; fi

# ---- two datasets: one set of figures each, with the dataset slug in the file names
"$KVB" gen --model-like tiny --layers 3 --seed 1 --out "$TMP/tiny-b.h5" >/dev/null
"$PY" - "$TMP/ci.json" "$TMP/tiny-b.h5" "$TMP/two.json" <<'PY'
import json, sys
cfg = json.load(open(sys.argv[1]))
cfg["datasets"].append({"path": sys.argv[2], "max_queries": 8})
cfg["codecs"] = [{"codec": "fp16"}, {"codec": "int", "bits": [5, 9]}, {"codec": "kivi", "bits": [1.5, 3]}]
json.dump(cfg, open(sys.argv[3], "w"), indent=1)
PY
rc=0; "$KVB" run "$TMP/two.json" --output "$TMP/res2" -q || rc=$?
if [ "$rc" -ne 0 ]; then echo "kvbench run (two datasets) exited $rc"; exit 1; fi
echo "== two datasets"
if ! "$PY" "$PLOT" "$TMP/res2" > out3.txt 2>&1; then cat out3.txt; fail "plot_results.py on two datasets"; fi
cat out3.txt
for slug in ci-tiny tiny-b; do
  for f in fidelity_vs_bits throughput_vs_bits per_layer_cosine; do check_png "$TMP/res2/${f}_$slug.png"; done
done
grep -qx "per_layer_cosine_ci-tiny: 4 rows x 2 layers" out3.txt || fail "ci-tiny heat map rows (4 ok cells, 2 layers)"
grep -qx "per_layer_cosine_tiny-b: 4 rows x 3 layers" out3.txt || fail "tiny-b heat map rows (4 ok cells, 3 layers)"

# ---- e2e results: the run figures from the layer-level metrics, plus Δppl vs bits and one proxy figure per
# metric of e2e.proxy_correlation. Sizes: figsize × 110 dpi (10 × 5.8 in; 6.4 in per panel × 5.4 in).
echo "== e2e"
if [ -n "${KVB_E2E_RESULTS:-}" ]; then
  mkdir -p "$TMP/e2e" && cp "$KVB_E2E_RESULTS/results.json" "$TMP/e2e/results.json"
else
  "$PY" "$ROOT/tests/plots/e2e_fixture.py" write "$TMP/e2e"
fi
"$PY" "$ROOT/tests/plots/e2e_fixture.py" expect "$TMP/e2e/results.json" > e2e_want.txt
if ! "$PY" "$PLOT" "$TMP/e2e" > out4.txt 2> err4.txt; then cat out4.txt err4.txt; fail "plot_results.py on e2e results"; fi
cat out4.txt
while IFS= read -r line; do
  grep -qxF "$line" out4.txt || fail "plot_results.py should print '$line'"
done < e2e_want.txt
check_png "$TMP/e2e/e2e_ppl_vs_bits.png" 1100x638
grep -qx "$TMP/e2e/e2e_ppl_vs_bits.png" out4.txt || fail "e2e_ppl_vs_bits.png path not printed"
for m in $(sed -n 's/^e2e_proxy_\([^:]*\):.*/\1/p' e2e_want.txt); do
  panels=$(grep "^e2e_proxy_$m:" e2e_want.txt | grep -o "_layer" | wc -l)
  check_png "$TMP/e2e/e2e_proxy_$m.png" "$((704 * panels))x594"
  grep -qx "$TMP/e2e/e2e_proxy_$m.png" out4.txt || fail "e2e_proxy_$m.png path not printed"
done
[ "$(grep -c '^e2e_proxy_' e2e_want.txt)" -ge 1 ] || fail "no proxy metric in e2e.proxy_correlation"
for f in fidelity_vs_bits per_layer_cosine; do check_png "$TMP/e2e/$f.png"; done
# a malformed e2e block is an invalid results file (exit 3, named)
mkdir -p bade2e
"$PY" - "$TMP/e2e/results.json" "$TMP/bade2e/results.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
doc["e2e"]["proxy_correlation"] = [{"metric": "cosine", "over": "every_layer", "spearman": 0.5, "cells": 3}]
json.dump(doc, open(sys.argv[2], "w"))
PY

# ---- errors
echo "== errors"
expect_rc() {  # expect_rc RC PATTERN ARGS...
  local want=$1 pat=$2; shift 2
  local got=0
  "$PY" "$PLOT" "$@" > err.txt 2>&1 || got=$?
  if [ "$got" -ne "$want" ] || ! grep -q -- "$pat" err.txt; then
    cat err.txt; fail "plot_results.py $* exited $got (want $want, message with '$pat')"
  else
    echo "ok  exit $want: $(head -1 err.txt)"
  fi
}
mkdir -p empty bad notres
echo '{"cells": [' > bad/results.json
echo '{"hello": 1}' > notres/results.json
expect_rc 2 "empty/results.json" "$TMP/empty"
expect_rc 3 "bad/results.json" "$TMP/bad"
expect_rc 3 "notres/results.json" "$TMP/notres"
expect_rc 2 "allowed" "$TMP/res" --metric nosuch
expect_rc 3 "bade2e/results.json: e2e.proxy_correlation" "$TMP/bade2e"

if [ "$fails" -ne 0 ]; then echo "plots: $fails failure(s)"; exit 1; fi
echo "plots: all passed"
