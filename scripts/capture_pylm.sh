#!/usr/bin/env bash
# Record the pylm dump that configs/pylm.json reads: kvbench capture of ../shared/models/pylm (a byte-level
# LLaMA trained on Python source, head_dim 128; see its README.md) over its held-out text, never committed.
#
#   bash scripts/capture_pylm.sh [--force]
#
# N consecutive windows of T held-out bytes each, the last Q positions of each window recorded as queries
# (C = T - Q context tokens): sequence s0 calibrates the trainable codecs, s1.. are evaluated.
# Idempotent: when OUT exists, `kvbench inspect` validates it, its model_revision is the checkpoint's sha256,
# its shapes are these, and OUT.stamp records the same inputs (sha256 of checkpoint and id file, N, T, Q),
# it prints "up to date" and does nothing; --force records it again. The dump is written to a temporary
# name and renamed by capture itself, so an interrupted capture leaves no half-written OUT.
# Environment: KVBENCH (default ./build/kvbench), PYLM_DIR (default ../shared/models/pylm from the repo root),
# OUT (default data/pylm.h5; git-ignored). Exit 2 when the model directory or one of its files is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

KVBENCH=${KVBENCH:-./build/kvbench}
PYLM_DIR=${PYLM_DIR:-../shared/models/pylm}
OUT=${OUT:-data/pylm.h5}
# T = the model's seq_len (2048); 64 queries leave C = 1984 context tokens, the context the pylm README's
# statistics describe. 4 windows: 1 calibration + 3 evaluated, 8 192 of the 381 138 held-out bytes.
SEQUENCES=4 TOKENS=2048 QUERIES=64
FORCE=0
case "${1:-}" in
  "") ;;
  --force) FORCE=1 ;;
  -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "capture_pylm.sh: unknown argument '$1' (usage: capture_pylm.sh [--force])" >&2; exit 2 ;;
esac

die() { echo "capture_pylm.sh: error: $*" >&2; exit "${2:-2}"; }

MODEL="$PYLM_DIR/pylm.bin" IDS="$PYLM_DIR/heldout.ids"
[ -d "$PYLM_DIR" ] || die "$PYLM_DIR: no such directory (the pylm checkpoint is expected in ../shared/models/pylm beside the repository; set PYLM_DIR to its directory)"
for f in "$MODEL" "$IDS"; do
  [ -f "$f" ] || die "$f: no such file (expected pylm.bin and heldout.ids in $PYLM_DIR)"
done
[ -x "$KVBENCH" ] || die "$KVBENCH: not an executable (build it: KVB_BUILD_TARGET=kvbench bash scripts/build.sh, or set KVBENCH)"

stamp_text() {
  local model_sha ids_sha
  model_sha=$(sha256sum "$MODEL" | cut -d' ' -f1)
  ids_sha=$(sha256sum "$IDS" | cut -d' ' -f1)
  printf 'model_sha256=%s\nids_sha256=%s\nsequences=%s\ntokens=%s\nqueries=%s\n' \
    "$model_sha" "$ids_sha" "$SEQUENCES" "$TOKENS" "$QUERIES"
}

# dump_matches: OUT validates, comes from this checkpoint, has these shapes, and its stamp names these inputs.
dump_matches() {
  [ -f "$OUT" ] && [ -f "$OUT.stamp" ] || return 1
  [ "$(cat "$OUT.stamp")" = "$WANT" ] || return 1
  local js
  js=$("$KVBENCH" inspect "$OUT" --json 2>/dev/null) || return 1
  printf '%s' "$js" | python3 -c '
import json, sys
d = json.load(sys.stdin)
sha, n, t, q = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
seqs = d["sequences"]
ok = (d["attrs"].get("model_revision") == "sha256:" + sha and len(seqs) == n
      and all(s["n_tokens"] == t and s["n_queries"] == q and s["has_tokens"] for s in seqs))
sys.exit(0 if ok else 1)
' "$(sed -n 's/^model_sha256=//p' <<<"$WANT")" "$SEQUENCES" "$TOKENS" "$QUERIES"
}

WANT=$(stamp_text)
if [ "$FORCE" = 0 ] && dump_matches; then
  echo "capture_pylm.sh: $OUT is up to date ($SEQUENCES x $TOKENS tokens, $QUERIES queries; --force records it again)"
  exit 0
fi

mkdir -p "$(dirname "$OUT")"
rm -f "$OUT.stamp"  # a stale stamp must never vouch for a new dump
set -x
"$KVBENCH" capture --model "$MODEL" --token-file "$IDS" \
  --tokens "$TOKENS" --queries "$QUERIES" --sequences "$SEQUENCES" --out "$OUT"
{ set +x; } 2>/dev/null
printf '%s\n' "$WANT" > "$OUT.stamp.tmp" && mv "$OUT.stamp.tmp" "$OUT.stamp"
