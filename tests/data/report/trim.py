#!/usr/bin/python3
"""Trim a kvbench results.json into a small test fixture for tests/report (see README.md here).

Usage: trim.py IN OUT [LABEL...]   keep only the cells with these labels (all when none are given), the
fidelity metrics the report reads (mean and count of each aggregate), cosine/rel_l2/kl/mass_lost per layer,
7 significant digits, and drop bulky free text (storage items, throughput notes, codec reports
other than their implementation). The result still loads through kvbench's results reader."""
import json
import sys

KEEP = {"cosine", "rel_l2", "spearman", "kl", "mass_lost", "e2e_kl", "e2e_top1_agreement", "e2e_hidden_cosine",
        "e2e_ppl_rel_change"}


LAYER_KEEP = {"cosine", "rel_l2", "kl", "mass_lost"}


def r(x):
    return float(f"{x:.7g}") if isinstance(x, float) else x


def rr(x):
    """Round every float of a JSON value."""
    if isinstance(x, dict):
        return {k: rr(v) for k, v in x.items()}
    if isinstance(x, list):
        return [rr(v) for v in x]
    return r(x)


def trim_cell(c):
    c.get("storage", {}).pop("items", None)
    if c.get("throughput"):
        t = c["throughput"]
        t["note"] = ""
        for k in ("encode_tokens_per_s", "attend_queries_per_s", "attend_bytes_per_s"):
            if isinstance(t.get(k), dict):
                t[k] = {"median": t[k].get("median")}
    c["codec_report"] = {k: v for k, v in (c.get("codec_report") or {}).items() if k in ("implementation", "label")}
    if isinstance(c.get("fidelity"), dict):
        c["fidelity"] = {k: ({f: r(x) for f, x in v.items() if f in ("mean", "count")} if isinstance(v, dict) else v)
                         for k, v in c["fidelity"].items() if k in KEEP}
    c["per_layer"] = [{k: r(v) for k, v in l.items() if k in ("layer", "bits_per_element", "bits_per_element_with_fixed")
                       or k[:-5] in LAYER_KEEP} for l in c.get("per_layer") or []]
    if isinstance(c.get("e2e"), dict):
        e = c["e2e"]
        e.get("decode_tokens_per_s", {}).pop("note", None)
        for k in ("kl", "top1_agreement", "hidden_cosine"):
            if isinstance(e.get(k), dict):
                e[k] = {f: v for f, v in e[k].items() if f in ("mean", "ci95")}
        c["e2e"] = rr(e)
    return c


def main():
    src, dst, labels = sys.argv[1], sys.argv[2], sys.argv[3:]
    d = json.load(open(src))
    keep = [i for i, c in enumerate(d["cells"]) if not labels or c["label"] in labels]
    d["cells"] = [trim_cell(d["cells"][i]) for i in keep]
    d["run"]["cell_indices"] = [d["run"]["cell_indices"][i] for i in keep]
    st = [c["status"] for c in d["cells"]]
    d["summary"] = {"cells": len(st), "ok": st.count("ok"), "skipped": st.count("skipped"), "errors": st.count("error")}
    d["metrics"] = [m for m in d["metrics"] if m["name"] in KEEP]
    for ds in d["datasets"]:
        for k in ("reference_throughput", "reference_throughput_cuda"):
            if ds.get(k):
                ds[k]["note"] = ""
    if isinstance(d.get("e2e"), dict):
        d["e2e"]["protocol"] = "(trimmed; docs/e2e.md)"
    with open(dst, "w") as f:
        json.dump(d, f, indent=None, separators=(",", ":"), sort_keys=True)
        f.write("\n")


main()
