#!/usr/bin/env bash
# results_schema (ctest): every kind of results file kvbench writes validates against docs/results.schema.json.
# Produces, from a fresh tiny dump: the ci run (one skipped cell), its two shards and their merge, a resumed run
# (some cell and dataset records deleted first), a two-dataset run with kendall, presets, a trainable codec and
# throughput off, a timed run (the roofline blocks), and, when a python with h5py is there, a run with error cells (a float32 dump whose keys
# overflow fp8's logits); then validates each results.json, cells/<i>.json and datasets/<i>.json, and the committed
# baseline results/baselines/ci.json, and kvbench e2e's results (a run, shards merged, a resume), with
# tests/run/validate_results.py.
# Usage: results_schema.sh PATH/TO/kvbench. Exits 77 (skipped) when no python3 has the jsonschema module
# (Debian: apt-get install python3-jsonschema; bash scripts/setup.sh installs it), a failure when CI=true.
set -euo pipefail
KVB=${1:?usage: results_schema.sh PATH/TO/kvbench}
case "$KVB" in /*) ;; *) KVB="$PWD/$KVB" ;; esac
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SCHEMA="$ROOT/docs/results.schema.json"
if [ "${CI:-}" = "true" ]; then SKIP=1; else SKIP=77; fi
# python3 on PATH first (it may be a venv's), then the system's.
PY=""
for p in python3 /usr/bin/python3; do
  if command -v "$p" >/dev/null 2>&1 && "$p" -c "import jsonschema" >/dev/null 2>&1; then PY=$(command -v "$p"); break; fi
done
if [ -z "$PY" ]; then
  echo "results_schema: SKIP: no python3 with the jsonschema module (apt-get install python3-jsonschema, or bash scripts/setup.sh)"
  exit "$SKIP"
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
run() {  # run [-rc RC] OUT CONFIG [ARGS...]: kvbench run, quiet; an exit other than RC (default 0) is a failure
  local want=0 got=0
  if [ "$1" = "-rc" ]; then want=$2; shift 2; fi
  local out=$1 cfg=$2; shift 2
  "$KVB" run "$cfg" --output "$out" -q "$@" > "$out.log" 2>&1 || got=$?
  if [ "$got" -ne "$want" ]; then cat "$out.log"; fail "kvbench run $cfg $* exited $got (want $want)"; fi
}
# expect FILE PYTHON-EXPR: the expression holds for d = the parsed file
expect() {
  "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if ($2) else 1)" "$1" || fail "$1: expected $2"
}

"$KVB" gen --model-like tiny --out "$TMP/ci-tiny.h5" >/dev/null
"$KVB" gen --model-like tiny --layers 3 --seed 1 --out "$TMP/tiny-b.h5" >/dev/null
"$PY" - "$ROOT/configs/ci.json" "$TMP" <<'PY'
import json, sys
cfg = json.load(open(sys.argv[1]))
tmp = sys.argv[2]
cfg["datasets"][0]["path"] = f"{tmp}/ci-tiny.h5"
json.dump(cfg, open(f"{tmp}/ci.json", "w"), indent=1)
# Every optional part of a cell and a dataset: kendall, presets, a trainable codec's calibration, two datasets,
# no throughput (null throughput and reference rows).
cfg["datasets"].append({"path": f"{tmp}/tiny-b.h5", "max_queries": 4})
cfg["codecs"] = [{"codec": "fp16"}, {"codec": "kivi", "preset": "paper-2"}, {"codec": "lookat", "preset": "paper-2"},
                 {"codec": "int", "bits": [4]}]
cfg["metrics"] = {"topk": 8, "kendall": True}
cfg["throughput"] = False
json.dump(cfg, open(f"{tmp}/variants.json", "w"), indent=1)
# A timed run (min_time_s > 0): environment.roofline and every throughput record's roofline fields.
cfg = json.load(open(f"{tmp}/ci.json"))
cfg["codecs"] = [{"codec": "fp16"}, {"codec": "int", "bits": [5]}, {"codec": "snapkv", "bits": [4]}]
cfg["min_time_s"], cfg["repeats"] = 0.01, 2
json.dump(cfg, open(f"{tmp}/timed.json", "w"), indent=1)
PY

run "$TMP/ci" "$TMP/ci.json"
expect "$TMP/ci/results.json" "any(c['status'] == 'skipped' for c in d['cells'])"
run "$TMP/s1" "$TMP/ci.json" --shard 1/2
run "$TMP/s2" "$TMP/ci.json" --shard 2/2
"$KVB" merge "$TMP/s1" "$TMP/s2" --output "$TMP/merged" > merge.log 2>&1 || { cat merge.log; fail "kvbench merge"; }
expect "$TMP/merged/results.json" "len(d['run']['merged_from']) == 2 and 'shard' not in d['run']"
cp -r "$TMP/ci" "$TMP/resumed"
rm -f "$TMP/resumed/cells/1.json" "$TMP/resumed/cells/4.json" "$TMP/resumed/datasets/0.json"
run "$TMP/resumed" "$TMP/ci.json" --resume
expect "$TMP/resumed/results.json" "d['run']['resumed_cells'] > 0"
run "$TMP/timed" "$TMP/timed.json" --device cpu  # the roofline is the host's
expect "$TMP/timed/results.json" "'roofline' in d['environment'] and all('roofline_fraction' in c['throughput'] for c in d['cells'])"
run "$TMP/variants" "$TMP/variants.json"
expect "$TMP/variants/results.json" "any('calibration' in c for c in d['cells']) and all('kendall' in c['fidelity'] for c in d['cells'] if c['status'] == 'ok')"

# Error cells: values near the float32 limit overflow the codecs' fp16/fp8 storage (inf outputs) while the
# float64 reference stays finite; a run with an error cell exits 4. (Keys that large would make the logits
# themselves exceed float32, which is a data error naming softmax_scale: docs/errors.md §4.)
H5PY=""
for p in /usr/bin/python3 python3; do
  if command -v "$p" >/dev/null 2>&1 && "$p" -c "import h5py, numpy" >/dev/null 2>&1; then H5PY=$(command -v "$p"); break; fi
done
if [ -n "$H5PY" ]; then
  "$H5PY" - "$ROOT/scripts" "$TMP/huge.h5" <<'PY'
import argparse, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import make_h5py_dump as m
store = m.store
m.store = lambda group, name, x, dtype, chunked: store(group, name, np.clip(x, -3, 3) * 1e38 if name == "values" else x,
                                                       dtype, chunked)
m.write(argparse.Namespace(out=sys.argv[2], dtype="float32", fixed_strings=False, seed=3, layers=1, heads=4,
                           kv_heads=2, head_dim=16, tokens=40, context=32, sequences=1))
PY
  cat > "$TMP/errors.json" <<JSON
{"name": "errors", "datasets": [{"path": "$TMP/huge.h5", "max_queries": 4}],
 "codecs": [{"codec": "fp16"}, {"codec": "fp8"}], "metrics": {"topk": 4}, "throughput": false}
JSON
  run -rc 4 "$TMP/errors" "$TMP/errors.json"
  expect "$TMP/errors/results.json" "any(c['status'] == 'error' for c in d['cells'])"
else
  echo "results_schema: note: no python3 with h5py and numpy; the error-cell run is left out"
fi

# kvbench e2e (stories260K from ../shared/models, when there): a run with a skipped and a trainable cell, its two
# shards merged, and a resume.
STORIES="$ROOT/../shared/models/stories260K/stories260K.bin"
if [ -f "$STORIES" ]; then
  cat > "$TMP/e2e.json" <<JSON
{"name": "e2e", "model": {"checkpoint": "$STORIES", "text": {"generate": {"seed": 4}}, "prompt_len": 64,
 "continuation_len": 8, "windows": 2, "calibration_windows": 1},
 "codecs": [{"codec": "fp16"}, {"codec": "int", "bits": [2, 5]}, {"codec": "lookat", "bits": [8.2]}],
 "metrics": {"topk": 8, "bootstrap": 50}}
JSON
  e2e() { "$KVB" e2e "$TMP/e2e.json" -q "$@" > "$TMP/e2e-$#.log" 2>&1 || { cat "$TMP/e2e-$#.log"; fail "kvbench e2e $*"; }; }
  e2e --output "$TMP/e2e"
  expect "$TMP/e2e/results.json" "'e2e' in d and any(c['status'] == 'skipped' for c in d['cells'])"
  e2e --output "$TMP/e2e-s1" --shard 1/2
  e2e --output "$TMP/e2e-s2" --shard 2/2
  "$KVB" merge "$TMP/e2e-s1" "$TMP/e2e-s2" --output "$TMP/e2e-merged" > merge.log 2>&1 || { cat merge.log; fail "merge e2e"; }
  rm -f "$TMP/e2e/cells/1.json"
  e2e --output "$TMP/e2e" --resume
  expect "$TMP/e2e/results.json" "d['run']['resumed_cells'] > 0 and 'e2e' in d"
else
  echo "results_schema: note: no $STORIES; the e2e runs are left out"
fi

files=("$ROOT/results/baselines/ci.json")
while IFS= read -r f; do files+=("$f"); done < <(find "$TMP" -name '*.json' -path '*/results.json' -o -name '*.json' \
  \( -path '*/cells/*' -o -path '*/datasets/*' \) | sort)
echo "== validating ${#files[@]} files against docs/results.schema.json"
"$PY" "$ROOT/tests/run/validate_results.py" "$SCHEMA" "${files[@]}" > validate.log 2>&1 || fail "schema validation"
grep -v '^ok ' validate.log || true
echo "$(grep -c '^ok ' validate.log) files valid"
if [ "$fails" -ne 0 ]; then echo "results_schema: $fails failure(s)"; exit 1; fi
echo "results_schema: all passed"
