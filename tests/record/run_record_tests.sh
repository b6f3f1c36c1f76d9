#!/usr/bin/env bash
# record_hf (ctest): scripts/record_kv.py against the real transformers library, without any download.
# Builds small randomly initialised models from configs written here (Llama with GQA 8:2 and RoPE "half",
# Qwen2 with GQA, GPT-2 without RoPE), records float32 dumps (plus one bfloat16 Llama dump), and checks each
# with kvbench: `inspect` (ref_out self-check) and `run` (ref_out_check passed, fp16 cosine >= 0.99999).
# Observation queries (--obs-window): the last W prompt positions' queries, across a prefill-chunk boundary,
# none with --obs-window 0, and at layer 0 the one at C-1 equal to the decode query a recording with context C-1
# makes there.
# Usage: run_record_tests.sh PATH/TO/kvbench. Exits 77 (skipped) when .venv or transformers is missing
# (bash scripts/setup.sh installs them).
set -euo pipefail
KVB=${1:?usage: run_record_tests.sh PATH/TO/kvbench}
case "$KVB" in /*) ;; *) KVB="$PWD/$KVB" ;; esac
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY="$ROOT/.venv/bin/python"
# In CI (CI=true) the environment is installed by .ci/run itself, so a missing one is a failure, not a skip.
if [ "${CI:-}" = "true" ]; then SKIP=1; else SKIP=77; fi
if [ ! -x "$PY" ]; then
  echo "record_hf: SKIP: $ROOT/.venv is missing (bash scripts/setup.sh creates it)"; exit "$SKIP"
fi
if ! "$PY" -c "import torch, transformers" >/dev/null 2>&1; then
  echo "record_hf: SKIP: torch or transformers does not import in $ROOT/.venv (bash scripts/setup.sh)"; exit "$SKIP"
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TRANSFORMERS_VERBOSITY=error HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP"

cat > llama.json <<'JSON'
{"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 8,
 "num_key_value_heads": 2, "head_dim": 32, "num_hidden_layers": 2, "vocab_size": 512,
 "max_position_embeddings": 1024, "rope_theta": 10000.0, "initializer_range": 0.08, "rms_norm_eps": 1e-5}
JSON
cat > qwen2.json <<'JSON'
{"model_type": "qwen2", "hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4,
 "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 512, "max_position_embeddings": 1024,
 "rope_theta": 1000000.0, "initializer_range": 0.08, "sliding_window": 1024, "use_sliding_window": false}
JSON
cat > gpt2.json <<'JSON'
{"model_type": "gpt2", "n_embd": 128, "n_head": 4, "n_layer": 2, "vocab_size": 512, "n_positions": 1024,
 "initializer_range": 0.08}
JSON
cat > cfg.json <<'JSON'
{"name": "record_hf", "datasets": [{"path": "DUMP", "sequences": "all", "layers": "all", "max_queries": 8}],
 "calibration": {"sequences": 1},
 "codecs": [{"codec": "fp16"}, {"codec": "int", "bits": [5, 9]}, {"codec": "kivi", "bits": [5]}],
 "metrics": {"topk": 16}, "device": "cpu", "threads": 2, "seed": 1, "repeats": 1, "throughput": false}
JSON

fails=0
check() {  # check NAME DTYPE EXTRA_RECORD_ARGS...
  local name=$1 dtype=$2; shift 2
  local dump="$TMP/$name.h5" out="$TMP/out-$name"
  echo "== $name ($dtype)"
  if ! "$PY" "$ROOT/scripts/record_kv.py" --random-init --seed 7 --context-len 160 --queries 8 --sequences 2 \
      --dtype "$dtype" --query-batch 3 --prefill-chunk 64 --out "$dump" "$@"; then
    echo "FAIL $name: record_kv.py failed"; fails=$((fails + 1)); return
  fi
  if ! "$KVB" inspect "$dump" > "$name.inspect.txt" 2>&1; then
    cat "$name.inspect.txt"; echo "FAIL $name: kvbench inspect"; fails=$((fails + 1)); return
  fi
  grep -E "^  (model|shape|dtype|rope) " "$name.inspect.txt" || true
  sed "s#DUMP#$dump#" cfg.json > "cfg-$name.json"
  if ! "$KVB" run "cfg-$name.json" --output "$out" > "$name.run.txt" 2>&1; then
    cat "$name.run.txt"; echo "FAIL $name: kvbench run"; fails=$((fails + 1)); return
  fi
  if ! "$PY" - "$out/results.json" "$name" <<'PYEOF'
import json, sys
doc = json.load(open(sys.argv[1]))
name = sys.argv[2]
problems = []
ds = doc["datasets"][0]
chk = ds.get("ref_out_check", {})
if chk.get("status") != "passed":
    problems.append(f"ref_out_check {chk}")
fp16 = [c for c in doc["cells"] if c["label"] == "fp16"]
if len(fp16) != 1 or fp16[0]["status"] != "ok":
    problems.append(f"fp16 cell: {fp16}")
else:
    cos = fp16[0]["fidelity"]["cosine"]["mean"]
    if not cos >= 0.99999:
        problems.append(f"fp16 cosine mean {cos} < 0.99999")
bad = [c["label"] for c in doc["cells"] if c["status"] == "error"]
if bad:
    problems.append(f"cells in error: {bad}")
print(f"  ref_out_check {chk.get('status')} (max err {chk.get('max_rel_l2', chk.get('max_err', '?'))}); "
      + ", ".join(f"{c['label']}: cos {c['fidelity']['cosine']['mean']:.6f}" for c in doc["cells"] if c["status"] == "ok"))
if problems:
    print(f"FAIL {name}: " + "; ".join(problems))
    sys.exit(1)
PYEOF
  then fails=$((fails + 1)); return; fi
  echo "ok $name"
}

check llama-gqa float32 --config-json llama.json --obs-window 40
check qwen2 float32 --config-json qwen2.json
check gpt2 float32 --config-json gpt2.json
check llama-gqa-bf16-layer1 bfloat16 --config-json llama.json --layers 1
check llama-gqa-layer0-no-obs float32 --config-json llama.json --layers 0 --obs-window 0
# context C-1 = 159: its first decode query is at position 159, the last observation query of llama-gqa
check llama-gqa-c159 float32 --config-json llama.json --context-len 159 --queries 9

# Shapes as the schema requires: K/V per KV head (never repeated), queries per query head, positions C..C+Q-1.
"$PY" - "$TMP/llama-gqa.h5" "$TMP/gpt2.h5" "$TMP/llama-gqa-bf16-layer1.h5" <<'PYEOF' || fails=$((fails + 1))
import sys, h5py, numpy as np
for path, (L, H, G, D, rope) in zip(sys.argv[1:], [(2, 8, 2, 32, "half"), (2, 4, 4, 32, "none"), (1, 8, 2, 32, "half")]):
    with h5py.File(path, "r") as f:
        a = f.attrs
        got = (int(a["n_layers"]), int(a["n_heads"]), int(a["n_kv_heads"]), int(a["head_dim"]), a["rope_style"])
        assert got == (L, H, G, D, rope), (path, got)
        s = f["sequences/s0"]
        assert s["layers/0/keys"].shape == (G, 168, D), s["layers/0/keys"].shape
        assert s["layers/0/queries"].shape == (H, 8, D)
        assert list(s["query_positions"][()]) == list(range(160, 168))
        assert s["tokens"].shape == (168,) and s["tokens"].dtype == np.int32
        assert a["model"].startswith("random-init:") and len(a["model_revision"]) == 64
        assert "transformers" in a["source"]
        W = 40 if path.endswith("/llama-gqa.h5") else 32  # the default
        assert list(s["obs_positions"][()]) == list(range(160 - W, 160)), s["obs_positions"][()]
        assert s["obs_positions"].dtype == np.int64
        for l in range(L):
            o = s[f"layers/{l}/obs_queries"]
            assert o.shape == (H, W, D) and o.dtype == s[f"layers/{l}/keys"].dtype, (o.shape, o.dtype)
print("ok schema shapes")
PYEOF

# Observation queries: none with --obs-window 0; at layer 0 the one at position 159 (C = 160) is the query of
# token 159 as the decode step of the C = 159 recording computes it (same weights and tokens; float32, other
# matmul shapes). Only layer 0: the decode steps mask their own key out (they attend to exactly the first C
# tokens), so from layer 1 on their hidden state differs from the causal pass's, whose token p sees 0..p.
"$PY" - "$TMP/llama-gqa.h5" "$TMP/llama-gqa-layer0-no-obs.h5" "$TMP/llama-gqa-c159.h5" <<'PYEOF' || fails=$((fails + 1))
import sys, h5py, numpy as np
with h5py.File(sys.argv[2], "r") as f:
    for sid, s in f["sequences"].items():
        assert "obs_positions" not in s and "obs_queries" not in s["layers/0"], sid
with h5py.File(sys.argv[1], "r") as a, h5py.File(sys.argv[3], "r") as b:
    worst = 0.0
    for sid in ("s0", "s1"):
        sa, sb = a["sequences"][sid], b["sequences"][sid]
        assert list(sa["tokens"][:160]) == list(sb["tokens"][:160])
        assert int(sb["query_positions"][0]) == 159 and int(sa["obs_positions"][-1]) == 159
        obs = sa["layers/0/obs_queries"][:, -1, :].astype(np.float64)
        dec = sb["layers/0/queries"][:, 0, :].astype(np.float64)
        err = np.linalg.norm(obs - dec, axis=-1) / np.linalg.norm(dec, axis=-1)
        worst = max(worst, float(err.max()))
    assert worst < 1e-5, f"observation query at 159 vs the decode query at 159: rel-L2 {worst}"
print(f"ok observation queries (layer 0, position 159: rel-L2 {worst:.2g} from the decode query)")
PYEOF

# The self-check has teeth: the same dump with a wrong softmax_scale must be refused (exit 3).
cp "$TMP/llama-gqa.h5" "$TMP/bad-scale.h5"
"$PY" -c "import h5py, sys; f = h5py.File(sys.argv[1], 'r+'); f.attrs['softmax_scale'] = 2 * f.attrs['softmax_scale']" \
  "$TMP/bad-scale.h5"
sed "s#DUMP#$TMP/bad-scale.h5#" cfg.json > cfg-bad.json
rc=0; "$KVB" run cfg-bad.json --output "$TMP/out-bad" > bad.run.txt 2>&1 || rc=$?
if [ "$rc" -eq 3 ] && grep -q "ref_out" bad.run.txt; then echo "ok wrong softmax_scale refused (exit 3)"
else cat bad.run.txt; echo "FAIL: a dump with a wrong softmax_scale gave exit $rc, expected 3"; fails=$((fails + 1)); fi

if [ "$fails" -ne 0 ]; then echo "record_hf: $fails check(s) failed"; exit 1; fi
echo "record_hf: all checks passed"
