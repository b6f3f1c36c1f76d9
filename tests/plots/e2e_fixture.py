#!/usr/bin/python3
"""e2e results for the plot test, until `kvbench e2e` writes real ones.

  e2e_fixture.py write DIR        write DIR/results.json: a hand-built `kvbench e2e` results file shaped as
                                  the lead's contract (the run's results family plus the "e2e" blocks; see
                                  the brief in tests/plots/run_plot_tests.sh), pylm-like numbers: 11 ok
                                  cells of 6 codecs over 3-16 bits, one skipped cell, 4 layers
  e2e_fixture.py expect FILE      print the lines plot_results.py must print for an e2e results.json,
                                  computed here independently of the plot script (a sort-and-sweep Pareto
                                  frontier instead of its pairwise one), so the test also runs on a real run

The fixture's proxy_correlation Spearman values are computed from its own cells (average ranks), so titles
and points agree as they will in a real run; mass_lost (2 cells) has "spearman": null, as a correlation over
fewer than 3 cells would.
"""
import json
import math
import os
import sys

# label, codec, bits_per_element, with fixed state, layer cosine (mean over layers), layer KL,
# e2e next-token KL, perplexity change (fraction), mass_lost (token-dropping codecs) or None
CELLS = [
    ("fp16", "fp16", 16.0, 16.0, 1.0, 9.7e-8, 0.0, 0.0, None),
    ("fp8-e4m3", "fp8", 8.0, 8.0, 0.99939, 1.7e-3, 2.1e-3, 0.0021, None),
    ("int8-g32", "int", 9.0, 9.0, 0.99999, 2.6e-5, 3.0e-4, 0.0003, None),
    ("int4-g32", "int", 5.0, 5.0, 0.99620, 7.4e-3, 1.8e-2, 0.019, None),
    ("int2-g32", "int", 3.0, 3.0, 0.90591, 0.182, 0.33, 0.38, None),
    ("kivi4-g32-r128", "kivi", 5.0, 5.77, 0.99765, 4.5e-3, 8.8e-3, 0.009, None),
    ("kivi2-g32-r128", "kivi", 3.0, 3.77, 0.94129, 0.115, 0.071, 0.075, None),
    ("balancekv-T2", "balancekv", 4.0, 4.52, 0.90540, 9.5e-8, 0.109, 0.12, 0.6016),
    ("uniform-T2", "uniform", 4.0, 4.52, 0.89011, 9.4e-8, 0.128, 0.141, 0.5956),
    ("h1b-angle-b256-v4", "h1b", 3.19, 3.19, 0.79472, 1.083, 0.62, 0.95, None),
    ("qjl-m256-o8x256-v2", "qjl", 3.63, 4.41, 0.93140, 0.162, 0.088, 0.095, None),
]
LAYER_SPREAD = (0.6, 0.9, 1.1, 1.4)  # per-layer error relative to the mean over layers (mean 1)
HIGHER = {"cosine", "spearman", "topk_recall", "e2e_top1_agreement", "e2e_hidden_cosine"}
PROXIES = ("cosine", "rel_l2", "spearman", "topk_recall", "kl", "mass_lost")
EXACT_PPL = 2.66  # pylm's held-out perplexity per byte (its README)


def agg(mean, spread=0.25):
    """A plausible aggregate around mean (error-like spread upward, bounded at 0)."""
    lo, hi = mean * (1 - spread), mean * (1 + 2 * spread)
    return {"count": 1536, "mean": mean, "median": mean * 0.97, "p05": lo, "p95": hi, "min": lo * 0.5,
            "max": hi * 1.5}


def layer_metrics(cos, kl, mass):
    """Mean-over-layers layer-level metrics of one cell, derived from its cosine and attention KL."""
    err = 1.0 - cos
    m = {"cosine": cos, "rel_l2": math.sqrt(2 * err) if err > 0 else 0.0,
         "spearman": 1.0 if mass is not None else 1.0 - 0.6 * err,  # selection: over the held tokens
         "topk_recall": max(0.0, 1.0 - 3.0 * math.sqrt(err)), "kl": kl}
    if mass is not None:
        m["mass_lost"] = mass
    return m


def layer_value(metric, mean, spread):
    if metric in HIGHER:  # spread the distance from the ideal 1
        return 1.0 - (1.0 - mean) * spread
    return mean * spread


def cell_record(row, index):
    label, codec, bits, bits_fixed, cos, kl, e2e_kl, rel, mass = row
    lm = layer_metrics(cos, kl, mass)
    fidelity = {k: agg(v, 0.0 if v in (0.0, 1.0) else 0.25) for k, v in lm.items()}
    fidelity.setdefault("mass_lost", None)
    top1 = max(0.0, 1.0 - 0.9 * math.sqrt(e2e_kl))
    hid = 1.0 - 0.02 * e2e_kl
    fidelity.update({"e2e_kl": agg(e2e_kl), "e2e_top1_agreement": agg(top1, 0.0),
                     "e2e_hidden_cosine": agg(hid, 0.0), "e2e_ppl_rel_change": agg(rel, 0.0)})
    half = 0.15 * rel + 0.0005 if rel > 0 else 0.0  # bootstrap interval half-width over 24 windows
    per_layer = [dict({"layer": l, "bits_per_element": bits},
                      **{f"{k}_mean": layer_value(k, v, s) for k, v in lm.items()})
                 for l, s in enumerate(LAYER_SPREAD)]

    def stat(mean):
        return {"mean": mean, "median": mean * 0.9, "p95": mean * 2.5, "ci95": [mean * 0.85, mean * 1.2]}

    tps = 900.0 if codec == "fp16" else 900.0 * (0.6 + 0.02 * bits)
    return {
        "dataset": "../shared/models/pylm/heldout.ids", "codec": codec, "label": label, "params": {},
        "preset": None, "budget": {"kind": f"bits={bits:g}", "target_bits": bits}, "bits_target": bits,
        "bits_candidate": bits, "device": "cpu", "status": "ok", "reason": "", "index": index,
        "storage": {"bits_per_element": bits, "bits_per_element_with_fixed": bits_fixed,
                    "bytes_per_token": bits * 2 * 128 / 8, "buffer_bytes": (bits_fixed - bits) * 1536 * 32,
                    "fixed_bytes": 0.0, "compression_ratio": 16.0 / bits_fixed, "source": "measured"},
        "fidelity": fidelity,
        "not_applicable": {} if mass is not None else {"mass_lost": "the codec holds every token"},
        "per_layer": per_layer,
        "throughput": None,
        "e2e": {"perplexity": {"exact": EXACT_PPL, "codec": EXACT_PPL * (1 + rel), "rel_change": rel,
                               "rel_change_ci95": [rel - half, rel + half]},
                "kl": stat(e2e_kl), "top1_agreement": stat(top1), "hidden_cosine": stat(hid),
                "decode_tokens_per_s": {"codec": tps, "exact": 900.0, "ratio": tps / 900.0}, "windows": 24},
        "codec_report": {},
    }


def ranks(xs):
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2.0 + 1
        i = j + 1
    return r


def spearman(xs, ys):
    if len(xs) < 3:
        return None
    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def layer_proxy(c, metric, over):
    if over == "mean_layer":
        return ((c.get("fidelity") or {}).get(metric) or {}).get("mean")
    vals = [e[f"{metric}_mean"] for e in c.get("per_layer") or [] if e.get(f"{metric}_mean") is not None]
    if not vals:
        return None
    return min(vals) if metric in HIGHER else max(vals)


def proxy_rows(cells):
    rows = []
    for m in PROXIES:
        for over in ("mean_layer", "worst_layer"):
            pairs = [(layer_proxy(c, m, over), c["e2e"]["kl"]["mean"]) for c in cells]
            pairs = [p for p in pairs if p[0] is not None]
            rho = spearman([p[0] for p in pairs], [p[1] for p in pairs])
            rows.append({"metric": m, "over": over, "spearman": rho, "cells": len(pairs)})
    return rows


def metric_registry():
    names = ["cosine", "rel_l2", "spearman", "kendall", "topk_recall", "kl", "score_rel_err", "mass_lost",
             "l2_err", "e2e_kl", "e2e_top1_agreement", "e2e_hidden_cosine", "e2e_ppl_rel_change"]
    return [{"name": n, "description": n, "better": "higher" if n in HIGHER | {"kendall"} else "lower"}
            for n in names]


def write(out_dir):
    cells = [cell_record(r, i) for i, r in enumerate(CELLS)]
    skipped = {"dataset": cells[0]["dataset"], "codec": "kvcar", "label": "kvcar", "params": {},
               "preset": None, "budget": {"kind": "bits=1", "target_bits": 1.0}, "bits_target": 1.0,
               "bits_candidate": None, "device": "cpu", "status": "skipped", "index": len(cells),
               "reason": "no candidate of kvcar fits 1 bits per element (smallest 1.5)"}
    doc = {
        "schema_version": 1,
        "kvbench": {"version": "0.1.0", "git_sha": "fixture", "dirty": False, "build_type": "Release"},
        "run": {"name": "e2e_fixture", "config_path": "configs/e2e_pylm.json", "duration_s": 1.0},
        "config": {"name": "e2e_fixture", "model": {"checkpoint": "../shared/models/pylm/pylm.bin",
                                                    "prompt_len": 1536, "continuation_len": 256, "windows": 25}},
        "environment": {},
        "datasets": [{"path": "../shared/models/pylm/heldout.ids", "model": "pylm",
                      "shape": {"n_layers": 4, "n_heads": 2, "n_kv_heads": 2, "head_dim": 128}}],
        "metrics": metric_registry(),
        "e2e": {"exact": {"perplexity": EXACT_PPL, "nll_per_token": math.log(EXACT_PPL)},
                "proxy_correlation": proxy_rows(cells)},
        "cells": cells + [skipped],
        "summary": {"cells": len(cells) + 1, "ok": len(cells), "skipped": 1, "errors": 0},
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)


def frontier_size(points):
    """Points no other beats (bits <= and change <=, one strictly): sort by bits, sweep the best change."""
    points = sorted(points)
    n, best_before, i = 0, math.inf, 0
    while i < len(points):
        j = i
        while j < len(points) and points[j][0] == points[i][0]:
            j += 1
        same = points[i:j]
        lowest = min(v for _, v in same)
        if lowest < best_before:
            n += sum(1 for _, v in same if v == lowest)
        best_before = min(best_before, lowest)
        i = j
    return n


def expect(path):
    doc = json.load(open(path, encoding="utf-8"))
    ok = [c for c in doc["cells"] if c["status"] == "ok"]

    def bits(c):
        st = c["storage"]
        b = st.get("bits_per_element_with_fixed")
        return b if b is not None else st["bits_per_element"]

    pts = [(bits(c), c["e2e"]["perplexity"]["rel_change"]) for c in ok
           if (c["e2e"].get("perplexity") or {}).get("rel_change") is not None]
    print(f"e2e_ppl_vs_bits: {len(pts)} cells, {frontier_size(pts)} on the Pareto frontier")
    rows = doc["e2e"].get("proxy_correlation") or []
    for m in dict.fromkeys(r["metric"] for r in rows):
        parts = []
        for over in ("mean_layer", "worst_layer"):
            if any(r["metric"] == m and r["over"] == over for r in rows):
                n = sum(1 for c in ok if layer_proxy(c, m, over) is not None
                        and (c["e2e"].get("kl") or {}).get("mean") is not None)
                parts.append(f"{over} {n} cells")
        print(f"e2e_proxy_{m}: " + ", ".join(parts))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "expect"):
        sys.exit("usage: e2e_fixture.py write DIR | expect RESULTS.json")
    write(sys.argv[2]) if sys.argv[1] == "write" else expect(sys.argv[2])
