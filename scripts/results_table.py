#!/usr/bin/env python3
"""Print a Markdown table of a kvbench results directory (or results.json), one row per ok cell, in the
results' cell order, so that README tables are generated rather than typed.

Usage: results_table.py RESULTS [--columns run|e2e] [--metric NAME]... [--dataset PATH] [--proxy]

  run (default for `kvbench run` results): label, bits with fixed state, cosine, Spearman, KL (the
      attention distributions', nats), attend speedup vs fp16 (throughput.attend_speedup_vs_fp16)
  e2e (default when results.json has a top-level "e2e" key, i.e. `kvbench e2e`): label (bold on the Pareto
      frontier of bits vs next-token KL; rows in order of bits), bits with fixed state, perplexity change (%,
      with its bootstrap 95% interval), next-token KL mean, top-1 agreement, last hidden state cosine, the
      layer-level attention cosine measured in the same run, decode tokens/s vs the fp16 cell
--proxy (e2e results) also prints the proxy-correlation table.

"bits with fixed state" is storage.bits_per_element_with_fixed (buffers and fixed bytes included at the
real context length). A null metric prints as "—". Skipped and error cells are listed under the table.
--metric NAME appends a column with fidelity[NAME].mean (e.g. mass_lost for token-dropping codecs).
--dataset keeps only the cells whose "dataset" (the path as written in the config) equals PATH.
Exit status: 0 ok, 2 bad usage or unreadable file, 3 not a kvbench results file. Standard library only.
"""
import argparse
import json
import math
import os
import sys

PROG = "results_table.py"
DASH = "—"


def die(code, msg):
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    sys.exit(code)


def load(path_arg):
    path = os.path.join(path_arg, "results.json") if os.path.isdir(path_arg) else path_arg
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        die(2, f"{path}: cannot read: {e.strerror}")
    except ValueError as e:
        die(3, f"{path}: not valid JSON: {e}")
    if not isinstance(doc, dict) or not isinstance(doc.get("cells"), list):
        die(3, f"{path}: not a kvbench results file (no \"cells\" list)")
    return path, doc


def get(obj, *keys):
    """obj[k0][k1]... or None when any step is missing or not a finite number at the end."""
    for k in keys:
        if isinstance(obj, dict):
            obj = obj.get(k)
        elif isinstance(obj, list) and isinstance(k, int) and -len(obj) <= k < len(obj):
            obj = obj[k]
        else:
            return None
    if isinstance(obj, bool) or not isinstance(obj, (int, float)) or not math.isfinite(obj):
        return None
    return float(obj)


def fixed(digits):
    return lambda v: DASH if v is None else f"{v:.{digits}f}".replace("-", "−")


def small(v):
    """KL-like values spanning decades: 4 decimals from 0.01 up, 2 significant digits in e-notation below."""
    if v is None:
        return DASH
    if v == 0 or abs(v) >= 0.01:
        return f"{v:.4f}"
    return f"{v:.1e}"


def percent_ci(c):
    v = get(c, "e2e", "perplexity", "rel_change")
    if v is None:
        return DASH
    lo = get(c, "e2e", "perplexity", "rel_change_ci95", 0)
    hi = get(c, "e2e", "perplexity", "rel_change_ci95", 1)
    s = f"{100 * v:+.3f}%"
    if lo is not None and hi is not None:
        s += f" [{100 * lo:+.3f}, {100 * hi:+.3f}]"
    return s.replace("-", "−")


# (header, value of a cell as text); one list per column set.
COLUMNS = {
    "run": [
        ("label", lambda c: c.get("label") or c["codec"]),
        ("bits (with fixed)", lambda c: fixed(2)(get(c, "storage", "bits_per_element_with_fixed"))),
        ("cosine", lambda c: fixed(5)(get(c, "fidelity", "cosine", "mean"))),
        ("spearman", lambda c: fixed(5)(get(c, "fidelity", "spearman", "mean"))),
        ("KL", lambda c: small(get(c, "fidelity", "kl", "mean"))),
        ("attend vs fp16", lambda c: fixed(2)(get(c, "throughput", "attend_speedup_vs_fp16"))),
    ],
    "e2e": [
        ("label", lambda c: ("**{}**" if c.get("_front") else "{}").format(c.get("label") or c["codec"])),
        ("bits (with fixed)", lambda c: fixed(2)(get(c, "storage", "bits_per_element_with_fixed"))),
        ("Δ perplexity [95% CI]", percent_ci),
        ("next-token KL", lambda c: small(get(c, "e2e", "kl", "mean"))),
        ("top-1 agreement", lambda c: fixed(4)(get(c, "e2e", "top1_agreement", "mean"))),
        ("hidden cosine", lambda c: fixed(5)(get(c, "e2e", "hidden_cosine", "mean"))),
        ("layer cosine", lambda c: fixed(4)(get(c, "fidelity", "cosine", "mean"))),
        ("decode vs fp16", lambda c: fixed(2)(get(c, "e2e", "decode_tokens_per_s", "ratio_vs_fp16"))),
    ],
}


def by_bits_with_frontier(cells):
    """e2e cells in order of bits with fixed state, each marked "_front" when it is on the Pareto frontier of
    bits vs next-token KL (a divergence, never below 0): no cheaper cell has a lower KL."""
    cells = sorted(cells, key=lambda c: get(c, "storage", "bits_per_element_with_fixed") or 0.0)
    best = math.inf
    for c in cells:
        kl = get(c, "e2e", "kl", "mean")
        c["_front"] = kl is not None and kl < best
        best = min(best, kl if kl is not None else math.inf)
    return cells


def proxy_table(doc):
    """The e2e proxy-correlation table: per layer metric, Spearman vs the e2e KL over layers' mean and worst."""
    rows = {}
    for r in doc["e2e"].get("proxy_correlation", []):
        rows.setdefault(r["metric"], {})[r["over"]] = r
    rho = lambda d, k: DASH if d.get(k, {}).get("spearman") is None else f"{d[k]['spearman']:+.3f}".replace("-", "−")
    lines = ["| layer metric | better | Spearman vs e2e KL (mean over layers) | (worst layer) | cells |",
             "|---|---|---|---|---|"]
    for m, d in rows.items():
        any_row = next(iter(d.values()))
        lines.append(f"| {m} | {any_row['better']} | {rho(d, 'mean_layer')} | {rho(d, 'worst_layer')} | {any_row['cells']} |")
    return "\n".join(lines)


def table(cells, columns):
    rows = [[fmt(c) for _, fmt in columns] for c in cells]
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog=PROG, description="Markdown table of a kvbench results.json.")
    ap.add_argument("results", metavar="RESULTS", help="results directory or its results.json")
    ap.add_argument("--columns", choices=sorted(COLUMNS), help="column set (default: e2e for e2e results, else run)")
    ap.add_argument("--metric", action="append", default=[], metavar="NAME",
                    help="append a column with the mean of this fidelity metric (repeatable)")
    ap.add_argument("--dataset", metavar="PATH", help="only cells of this dataset (as written in the config)")
    ap.add_argument("--proxy", action="store_true",
                    help="e2e results: also print the proxy-correlation table (which layer metric predicts the KL)")
    args = ap.parse_args(argv)
    path, doc = load(args.results)
    columns = list(COLUMNS[args.columns or ("e2e" if isinstance(doc.get("e2e"), dict) else "run")])
    columns += [(m, lambda c, m=m: small(get(c, "fidelity", m, "mean"))) for m in args.metric]
    cells = [c for c in doc["cells"] if isinstance(c, dict) and "codec" in c]
    if args.dataset is not None:
        cells = [c for c in cells if c.get("dataset") == args.dataset]
        if not cells:
            die(2, f"{path}: no cell has dataset {args.dataset!r}")
    ok = [c for c in cells if c.get("status") == "ok"]
    e2e = isinstance(doc.get("e2e"), dict)
    if e2e:
        ok = by_bits_with_frontier(ok)
    print(table(ok, columns))
    for c in cells:
        if c.get("status") != "ok":
            print(f"\nNot in the table: {c.get('label') or c['codec']} ({c.get('status')}: {c.get('reason', '')})")
    if args.proxy:
        if not e2e:
            die(2, f"{path}: --proxy needs kvbench e2e results")
        print()
        print(proxy_table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
