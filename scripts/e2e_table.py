#!/usr/bin/env python3
"""Markdown tables of a `kvbench e2e` results.json (for the README): the cells by bits with perplexity change,
next-token KL, top-1 agreement and decode speed, then the proxy-correlation table.

Usage: scripts/e2e_table.py RESULTS_DIR_OR_JSON
"""
import json
import os
import sys


def load(path):
    if os.path.isdir(path):
        path = os.path.join(path, "results.json")
    with open(path) as f:
        doc = json.load(f)
    if "e2e" not in doc:
        sys.exit(f"{path}: not a kvbench e2e results file (no top-level \"e2e\")")
    return doc


def cell_table(doc):
    ok = [c for c in doc["cells"] if c["status"] == "ok" and "e2e" in c]
    ok.sort(key=lambda c: c["storage"]["bits_per_element_with_fixed"])
    rows = ["| cell | bits (with fixed) | Δppl % [95% CI] | KL nats [95% CI] | top-1 | layer cosine | decode vs fp16 |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    best = float("inf")
    for c in ok:
        e = c["e2e"]
        p = e["perplexity"]
        dp = p["rel_change"]
        front = e["kl"]["mean"] < best  # the frontier of bits vs next-token KL (a divergence: never below 0)
        best = min(best, e["kl"]["mean"])
        lo, hi = p["rel_change_ci95"]
        kl = e["kl"]
        cos = c["fidelity"].get("cosine") or {}
        rows.append(f"| {'**' + c['label'] + '**' if front else c['label']} "
                    f"| {c['storage']['bits_per_element_with_fixed']:.3g} "
                    f"| {100 * dp:+.3f} [{100 * lo:+.3f}, {100 * hi:+.3f}] "
                    f"| {kl['mean']:.3g} [{kl['ci95'][0]:.3g}, {kl['ci95'][1]:.3g}] "
                    f"| {e['top1_agreement']['mean']:.4f} | {cos.get('mean', float('nan')):.4f} "
                    f"| {e['decode_tokens_per_s'].get('ratio_vs_fp16', float('nan')):.2f}× |")
    skipped = [c for c in doc["cells"] if c["status"] != "ok"]
    out = "\n".join(rows)
    if skipped:
        out += "\n\nNot evaluated: " + "; ".join(f"{c['label']} ({c['status']}: {c['reason']})" for c in skipped)
    return out


def proxy_table(doc):
    rows = {}
    for r in doc["e2e"]["proxy_correlation"]:
        rows.setdefault(r["metric"], {})[r["over"]] = r
    out = ["| layer metric | better | Spearman vs e2e KL, mean over layers | worst layer | cells |", "|---|---|---:|---:|---:|"]
    for m, d in rows.items():
        f = lambda k: "undefined" if d.get(k, {}).get("spearman") is None else f"{d[k]['spearman']:+.3f}"
        any_row = next(iter(d.values()))
        out.append(f"| {m} | {any_row['better']} | {f('mean_layer')} | {f('worst_layer')} | {any_row['cells']} |")
    return "\n".join(out)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    doc = load(sys.argv[1])
    e = doc["e2e"]
    ex = e["exact"]
    print(f"{e['model']}: {len(e['evaluated_windows'])} evaluated windows of {e['prompt_len']} + "
          f"{e['continuation_len']} tokens; exact perplexity {ex['perplexity']:.4f} "
          f"[{ex['perplexity_ci95'][0]:.4f}, {ex['perplexity_ci95'][1]:.4f}]; run took {doc['run']['duration_s']:.0f} s "
          f"on {doc['run']['threads']} threads. Bold: on the Pareto frontier of bits vs next-token KL.\n")
    print(cell_table(doc))
    print()
    print(proxy_table(doc))


if __name__ == "__main__":
    main()
