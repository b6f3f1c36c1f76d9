#!/usr/bin/python3
"""Plots from a kvbench results directory (docs/results.md §6), read from its results.json only.

Usage: plot_results.py RESULTS_DIR [--metric cosine] [--out DIR]

Per dataset it writes three PNGs (into RESULTS_DIR, or --out) and prints their paths:
  fidelity_vs_bits[_<dataset>].png    cosine, rel_l2 and spearman (mean) vs achieved bits per element, one
                                      line per codec, the Pareto frontier over all cells ringed and joined
  throughput_vs_bits[_<dataset>].png  attend throughput (median queries/s) vs bits, fp16 reference dashed
  per_layer_<metric>[_<dataset>].png  heat map: one row per ok cell, one column per layer (<metric>_mean)
The _<dataset> suffix (a slug of the dump's file name) is added only when the run has several datasets.
Only cells with status "ok" are drawn; skipped and error cells are listed in a note under each figure.
Also prints "per_layer_<metric>[_<dataset>]: N rows x L layers" for each heat map.

Results of `kvbench e2e` (a top-level "e2e" key) get the figures above from their layer-level metrics and,
once per run (one model), with bits per element *with fixed state* on the x axis:
  e2e_ppl_vs_bits.png       perplexity change vs exact (%, the bootstrap 95% interval as error bars), one
                            colour per codec, the Pareto frontier (fewer bits, smaller change) ringed and joined
  e2e_proxy_<metric>.png    per layer-level metric of e2e.proxy_correlation: the cell's value (mean over
                            layers = fidelity[metric].mean; worst layer = the worst per_layer <metric>_mean)
                            vs the e2e next-token KL mean (log y), each panel titled with its Spearman
and prints "e2e_ppl_vs_bits: N cells, M on the Pareto frontier" and
"e2e_proxy_<metric>: mean_layer N cells, worst_layer N cells".

Exit status: 0 ok, 1 matplotlib missing, 2 bad usage or results.json missing/unreadable,
3 results.json invalid (not JSON, or not a kvbench results file).
Needs matplotlib (Debian: apt-get install python3-matplotlib; run with /usr/bin/python3). No display needed.
"""
import argparse
import json
import math
import os
import re
import sys

PROG = "plot_results.py"
# Metric names and better directions come from results.json's "metrics" block (the metric registry, see
# docs/results.schema.json); these only choose which of them get a panel and a log axis.
FIDELITY_PANELS = ("cosine", "rel_l2", "spearman")
LOG_Y_METRICS = ("rel_l2",)


def die(code, msg):
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    sys.exit(code)


def load_results(path_arg):
    path = path_arg
    if os.path.isdir(path):
        path = os.path.join(path, "results.json")
    if not os.path.exists(path):
        die(2, f"{path}: no such file (expected a kvbench results directory holding results.json)")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        die(2, f"{path}: cannot read: {e.strerror}")
    try:
        doc = json.loads(text)
    except ValueError as e:
        die(3, f"{path}: not valid JSON: {e}")
    if not isinstance(doc, dict):
        die(3, f"{path}: not a kvbench results file (top level is not an object)")
    for key, typ in (("cells", list), ("datasets", list), ("metrics", list)):
        if not isinstance(doc.get(key), typ):
            die(3, f"{path}: not a kvbench results file (missing or malformed \"{key}\")")
    for i, c in enumerate(doc["cells"]):
        if not isinstance(c, dict) or not isinstance(c.get("status"), str) or "codec" not in c:
            die(3, f"{path}: cells[{i}] is malformed (needs codec and status)")
        if c["status"] == "ok":
            st = c.get("storage")
            if not isinstance(st, dict) or not isinstance(st.get("bits_per_element"), (int, float)):
                die(3, f"{path}: cells[{i}] ({c.get('label', c['codec'])}) is ok but has no "
                       "storage.bits_per_element")
    return path, doc


def num(x):
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def slugify(s):
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-._")
    return s or "dataset"


def group_by_dataset(doc):
    """[(dataset_record, cells)] in the order of doc["datasets"]; cells are matched through the config's
    dataset paths (a cell's "dataset" is the path as written in the config)."""
    datasets = doc["datasets"]
    cfg_ds = (doc.get("config") or {}).get("datasets") or []
    keys = []  # per dataset: the strings a cell's "dataset" may hold
    for i, ds in enumerate(datasets):
        k = set()
        if i < len(cfg_ds) and isinstance(cfg_ds[i], dict):
            k.update(v for v in (cfg_ds[i].get("path"), cfg_ds[i].get("resolved_path")) if v)
        if isinstance(ds, dict) and ds.get("path"):
            k.add(ds["path"])
        keys.append(k)
    groups = [(ds, []) for ds in datasets]
    orphans = []
    for c in doc["cells"]:
        for i, k in enumerate(keys):
            if c.get("dataset") in k:
                groups[i][1].append(c)
                break
        else:
            if len(groups) == 1:
                groups[0][1].append(c)
            else:
                orphans.append(c)
    if orphans:
        groups.append(({"path": "unmatched"}, orphans))
    # File-name slugs: the dump's base name, made unique.
    slugs, seen = [], {}
    for ds, _ in groups:
        p = ds.get("path") if isinstance(ds, dict) else None
        base = slugify(os.path.splitext(os.path.basename(p))[0]) if p else "dataset"
        n = seen.get(base, 0) + 1
        seen[base] = n
        slugs.append(base if n == 1 else f"{base}-{n}")
    return [(ds, cells, slug) for (ds, cells), slug in zip(groups, slugs)]


def unique_labels(cells):
    labels = [c.get("label") or c["codec"] for c in cells]
    counts = {}
    for l in labels:
        counts[l] = counts.get(l, 0) + 1
    seen, out = {}, []
    for c, l in zip(cells, labels):
        if counts[l] > 1:
            seen[l] = seen.get(l, 0) + 1
            extra = c.get("preset") or (c.get("budget") or {}).get("kind")
            l = f"{l} ({extra})" if extra and seen[l] > 1 else (l if seen[l] == 1 else f"{l} #{seen[l]}")
        out.append(l)
    return out


def pareto(points, higher_better):
    """Indices of points (bits, value) that no other point beats on both: bits <= and value at least as good,
    one of them strictly."""
    front = []
    for i, (b, v) in enumerate(points):
        dominated = False
        for j, (b2, v2) in enumerate(points):
            if j == i:
                continue
            better_or_eq = v2 >= v if higher_better else v2 <= v
            strictly = (v2 > v if higher_better else v2 < v) or b2 < b
            if b2 <= b and better_or_eq and strictly:
                dominated = True
                break
        if not dominated:
            front.append(i)
    return front


def place_labels(ax, items, fontsize=7.5):
    """Annotate (x, y, text, color) items next to their points, trying a few offsets so that labels do not
    overlap one another or the markers (approximate text boxes; call after the axis scales are set)."""
    if not items:
        return
    ax.autoscale_view()
    fig = ax.figure
    px = fig.dpi / 72.0  # display pixels per point
    char_w, line_h = 0.55 * fontsize * px, 1.25 * fontsize * px
    pts = [tuple(ax.transData.transform((x, y))) for x, y, _, _ in items]
    r = 5 * px  # the marker plus most of the Pareto ring
    taken = [(X - r, Y - r, X + r, Y + r) for X, Y in pts]
    frame = ax.bbox.extents  # x0, y0, x1, y1 in display pixels

    def overlap(a, b):
        return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

    # Place labels left to right, top first, so stacked points get stacked labels.
    order = sorted(range(len(items)), key=lambda i: (pts[i][0], -pts[i][1]))
    for i in order:
        x, y, text, color = items[i]
        X, Y = pts[i]
        w = char_w * len(text)
        lh = line_h / px
        right, left = 7, -7 - w / px
        cands = [(right, 5), (right, -5 - lh), (right, 5 + lh), (right, -5 - 2 * lh), (left, 5),
                 (left, -5 - lh), (right, 5 + 2 * lh), (left, 5 + lh), (right, -5 - 3 * lh), (left, -5 - 2 * lh)]
        best, best_n, best_box = None, None, None
        for dx, dy in cands:
            box = (X + dx * px, Y + dy * px, X + dx * px + w, Y + dy * px + line_h)
            n = sum(overlap(box, t) for t in taken)
            if box[0] < frame[0] or box[2] > frame[2] or box[1] < frame[1] or box[3] > frame[3]:
                n += 100
            if best_n is None or n < best_n:
                best, best_n, best_box = (dx, dy), n, box
            if n == 0:
                break
        taken.append(best_box)
        ax.annotate(text, (x, y), textcoords="offset points", xytext=best, fontsize=fontsize, color=color,
                    zorder=5, ha="left", va="bottom")


def note_text(skipped, extra=()):
    lines = [f"{c.get('label') or c['codec']}: {c['status']}" + (f" — {c['reason']}" if c.get("reason") else "")
             for c in skipped]
    lines += list(extra)
    if not lines:
        return ""
    return "Not drawn: " + "; ".join(lines)


def note_width(fig):
    return int(fig.get_figwidth() * 15)  # characters per line of the note at its font size


def note_margin(fig, text):
    """Bottom fraction of the figure to keep free for the note add_note will write."""
    if not text:
        return 0.0
    import textwrap
    lines = len(textwrap.wrap(text, width=note_width(fig)))
    return min(0.35, 0.03 + lines * 12.0 / (fig.get_figheight() * 72.0))


def add_note(fig, text):
    if not text:
        return
    import textwrap
    wrapped = textwrap.fill(text, width=note_width(fig))
    fig.text(0.01, 0.005, wrapped, fontsize=7.5, va="bottom", ha="left", color="0.3")


def codec_colors(codecs):
    import matplotlib.pyplot as plt
    cmap = plt.get_cmap("tab10")
    return {c: cmap(i % 10) for i, c in enumerate(codecs)}


def title_for(ds, doc):
    model = ds.get("model") if isinstance(ds, dict) else None
    path = ds.get("path") if isinstance(ds, dict) else None
    run = (doc.get("run") or {}).get("name") or (doc.get("config") or {}).get("name") or ""
    who = model or (os.path.basename(path) if path else "dataset")
    if path and model and os.path.basename(path) not in model:
        who = f"{model} ({os.path.basename(path)})"
    return f"{run}: {who}" if run else who


def fmt_val(v, lo, hi):
    if v is None:
        return ""
    if -1.0 <= lo and hi <= 1.0 + 1e-12:  # correlation-like: fixed decimals so rows compare
        return f"{v:.4f}"
    return f"{v:.3g}"


def plot_dataset(plt, doc, ds, cells, slug, multi, out_dir, metric, better):
    written = []
    suffix = f"_{slug}" if multi else ""
    ok = [c for c in cells if c["status"] == "ok"]
    not_ok = [c for c in cells if c["status"] != "ok"]
    labels = dict(zip(map(id, ok), unique_labels(ok)))
    codecs = []
    for c in ok:
        if c["codec"] not in codecs:
            codecs.append(c["codec"])
    colors = codec_colors(codecs)
    title = title_for(ds, doc)
    bits = {id(c): float(c["storage"]["bits_per_element"]) for c in ok}

    # (1) fidelity vs bits: the panels the registry block knows, in the block's order
    panels = [m for m in better if m in FIDELITY_PANELS] or list(better)[:3]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 5.4), squeeze=False)
    axes = axes[0]
    missing, pending = [], []
    for ax, m in zip(axes, panels):
        hb = better[m] == "higher"
        pts, ann = [], []
        for c in ok:
            v = num(((c.get("fidelity") or {}).get(m) or {}).get("mean"))
            if v is None:
                missing.append(f"{labels[id(c)]}: no {m}")
                continue
            if m in LOG_Y_METRICS and v <= 0:
                v = 1e-16
            pts.append((c, bits[id(c)], v))
        for codec in codecs:
            cp = sorted([p for p in pts if p[0]["codec"] == codec], key=lambda p: (p[1], p[2]))
            if not cp:
                continue
            ax.plot([p[1] for p in cp], [p[2] for p in cp], "o-", color=colors[codec], label=codec,
                    ms=6, lw=1.5, zorder=3)
            ann += [(b, v, labels[id(c)], colors[codec]) for c, b, v in cp]
        front = sorted((pts[i] for i in pareto([(b, v) for _, b, v in pts], hb)), key=lambda p: (p[1], p[2]))
        if front:
            ax.plot([p[1] for p in front], [p[2] for p in front], "--", color="0.35", lw=1, zorder=2,
                    drawstyle="steps-post" if len(front) > 1 else "default")
            ax.scatter([p[1] for p in front], [p[2] for p in front], s=170, facecolors="none",
                       edgecolors="black", linewidths=1.3, zorder=4, label="Pareto frontier")
        if m in LOG_Y_METRICS:
            ax.set_yscale("log")
        ax.set_xlabel("achieved bits per element (K and V)")
        ax.set_ylabel(f"{m} (mean, {'higher' if hb else 'lower'} is better)")
        ax.set_title(m)
        ax.grid(True, which="major", alpha=0.3)
        if not pts:
            ax.text(0.5, 0.5, f"no cell reports {m}", transform=ax.transAxes, ha="center", va="center")
        else:
            ax.margins(x=0.12, y=0.1)
            pending.append((ax, ann))
    fig.suptitle(f"Fidelity vs bits per element — {title}")
    handles, seen_l = [], set()
    for ax in axes:
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in seen_l:
                seen_l.add(l)
                handles.append((h, l))
    if handles:
        fig.legend([h for h, _ in handles], [l for _, l in handles], loc="upper center", ncol=len(handles),
                   fontsize=9, bbox_to_anchor=(0.5, 0.945), frameon=False)
    note = note_text(not_ok, sorted(set(missing)))
    fig.tight_layout(rect=(0, 0.06 if note else 0, 1, 0.9))
    for ax, ann in pending:  # after the layout: placement works in display coordinates
        place_labels(ax, ann)
    add_note(fig, note)
    p = os.path.join(out_dir, f"fidelity_vs_bits{suffix}.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)

    # (2) attend throughput vs bits
    tp = []
    for c in ok:
        v = num((((c.get("throughput") or {}).get("attend_queries_per_s")) or {}).get("median"))
        if v is not None and v > 0:
            tp.append((c, bits[id(c)], v))
    ref = num(((((ds or {}).get("reference_throughput") or {}).get("attend_queries_per_s")) or {}).get("median"))
    if tp or ref:
        fig, ax = plt.subplots(figsize=(10, 5.6))
        ann = []
        for codec in codecs:
            cp = sorted([q for q in tp if q[0]["codec"] == codec], key=lambda q: (q[1], q[2]))
            if not cp:
                continue
            ax.plot([q[1] for q in cp], [q[2] for q in cp], "o-", color=colors[codec], label=codec, ms=6, zorder=3)
            ann += [(b, v, labels[id(c)], colors[codec]) for c, b, v in cp]
        if ref:
            ax.axhline(ref, color="0.3", ls="--", lw=1.2, label=f"fp16 reference ({ref:,.0f} q/s)")
        vals = [q[2] for q in tp] + ([ref] if ref else [])
        if vals and max(vals) / min(vals) > 30:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0, top=max(vals) * 1.15)
        ax.set_xlabel("achieved bits per element (K and V)")
        ax.set_ylabel("attend throughput (queries/s, median)")
        rt = (ds or {}).get("reference_throughput") or {}
        sub = []
        if rt.get("device"):
            sub.append(f"device {rt['device']}")
        if rt.get("context_len"):
            sub.append(f"context {rt['context_len']}")
        if rt.get("gqa_group"):
            sub.append(f"GQA group {rt['gqa_group']}")
        ax.set_title(f"Attend throughput vs bits — {title}" + (f"\n{', '.join(sub)}" if sub else ""), fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        ax.margins(x=0.12)
        no_tp = [f"{labels[id(c)]}: no throughput" for c in ok if all(c is not q[0] for q in tp)]
        note = note_text(not_ok, no_tp)
        fig.tight_layout(rect=(0, 0.07 if note else 0, 1, 1))
        place_labels(ax, ann)
        add_note(fig, note)
        p = os.path.join(out_dir, f"throughput_vs_bits{suffix}.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    else:
        print(f"throughput_vs_bits{suffix}: skipped (no throughput in results.json)", file=sys.stderr)

    # (3) per-layer heat map
    key = f"{metric}_mean"
    layer_ids = []
    rows = []
    no_layer = []
    for c in ok:
        pl = c.get("per_layer")
        vals = {}
        if isinstance(pl, list):
            for e in pl:
                if isinstance(e, dict) and "layer" in e:
                    v = num(e.get(key))
                    if v is not None:
                        vals[e["layer"]] = v
        if not vals:
            no_layer.append(f"{labels[id(c)]}: no per-layer {metric}")
            continue
        rows.append((labels[id(c)], vals))
        for l in vals:
            if l not in layer_ids:
                layer_ids.append(l)
    layer_ids.sort()
    name = f"per_layer_{metric}{suffix}"
    if rows:
        import numpy as np
        data = np.full((len(rows), len(layer_ids)), np.nan)
        for r, (_, vals) in enumerate(rows):
            for j, l in enumerate(layer_ids):
                if l in vals:
                    data[r, j] = vals[l]
        hb = better[metric] == "higher"
        cmap = plt.get_cmap("viridis" if hb else "viridis_r").copy()
        cmap.set_bad("0.85")
        w = min(max(6.5, 2.6 + 0.55 * len(layer_ids)), 22)
        h = min(max(3.2, 1.4 + 0.42 * len(rows)), 20)
        fig, ax = plt.subplots(figsize=(w, h + (0.5 if not_ok or no_layer else 0)))
        finite = data[np.isfinite(data)]
        lo, hi = float(finite.min()), float(finite.max())
        norm = None
        if metric in LOG_Y_METRICS and lo > 0 and hi / lo > 100:
            from matplotlib.colors import LogNorm
            norm = LogNorm(vmin=lo, vmax=hi)
        im = ax.imshow(np.ma.masked_invalid(data), aspect="auto", cmap=cmap, norm=norm,
                       interpolation="nearest")
        cb = fig.colorbar(im, ax=ax)
        cb.set_label(f"{key} ({'higher' if hb else 'lower'} is better)")
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([r[0] for r in rows], fontsize=8)
        step = max(1, len(layer_ids) // 32)
        ax.set_xticks(range(0, len(layer_ids), step))
        ax.set_xticklabels([str(l) for l in layer_ids[::step]], fontsize=8)
        ax.set_xlabel("layer")
        ax.set_title(f"Per-layer {metric} — {title}", fontsize=10)
        if data.size <= 240:
            for r in range(data.shape[0]):
                for j in range(data.shape[1]):
                    v = data[r, j]
                    if not np.isfinite(v):
                        continue
                    rgba = im.cmap(im.norm(v))
                    lum = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
                    ax.text(j, r, fmt_val(float(v), lo, hi), ha="center", va="center", fontsize=7,
                            color="black" if lum > 0.5 else "white")
        note = note_text(not_ok, no_layer)
        fig.tight_layout(rect=(0, 0.09 if note else 0, 1, 1))
        add_note(fig, note)
        p = os.path.join(out_dir, f"{name}.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
        print(f"{name}: {len(rows)} rows x {len(layer_ids)} layers")
    else:
        print(f"{name}: skipped (no ok cell has per_layer {key})", file=sys.stderr)
    return written


# ---- e2e results (`kvbench e2e`, recognised by the top-level "e2e" key; docs/results.md)

E2E_OVER = ("mean_layer", "worst_layer")  # panel order of a proxy figure


def e2e_validate(path, doc):
    """The e2e parts the plots read; exit 3 naming the first malformed one."""
    e2e = doc["e2e"]
    if not isinstance(e2e, dict):
        die(3, f"{path}: \"e2e\" is not an object")
    pc = e2e.get("proxy_correlation", [])
    if not isinstance(pc, list) or any(not isinstance(r, dict) or not isinstance(r.get("metric"), str) or
                                       r.get("over") not in E2E_OVER for r in pc):
        die(3, f"{path}: e2e.proxy_correlation must be a list of {{metric, over: mean_layer|worst_layer, "
               "spearman, cells}")
    for i, c in enumerate(doc["cells"]):
        if c["status"] == "ok" and not isinstance(c.get("e2e"), dict):
            die(3, f"{path}: cells[{i}] ({c.get('label', c['codec'])}) is ok but has no \"e2e\" object")


def e2e_bits(c):
    """The x axis of every e2e plot: bits per element with buffers and fixed state at the real prompt."""
    st = c.get("storage") or {}
    b = num(st.get("bits_per_element_with_fixed"))
    return b if b is not None else float(st["bits_per_element"])


def e2e_ppl_points(ok, labels):
    """[(cell, bits, rel_change %, err_lo, err_hi)] and notes for cells without a perplexity change."""
    pts, missing = [], []
    for c in ok:
        ppl = (c["e2e"].get("perplexity") or {})
        v = num(ppl.get("rel_change"))
        if v is None:
            missing.append(f"{labels[id(c)]}: no perplexity rel_change")
            continue
        ci = ppl.get("rel_change_ci95")
        lo, hi = (num(ci[0]), num(ci[1])) if isinstance(ci, list) and len(ci) == 2 else (None, None)
        err = (max(0.0, v - lo) * 100 if lo is not None else 0.0, max(0.0, hi - v) * 100 if hi is not None else 0.0)
        pts.append((c, e2e_bits(c), 100 * v, err[0], err[1]))
    return pts, missing


def plot_e2e_ppl(plt, doc, ok, not_ok, labels, colors, title, out_dir):
    """Δperplexity (%, bootstrap 95% interval as error bars) vs bits with fixed state; Pareto frontier over
    all cells (fewer bits, smaller perplexity change)."""
    pts, missing = e2e_ppl_points(ok, labels)
    fig, ax = plt.subplots(figsize=(10, 5.8))
    ann = []
    for codec in colors:
        cp = sorted([p for p in pts if p[0]["codec"] == codec], key=lambda p: (p[1], p[2]))
        if not cp:
            continue
        ax.errorbar([p[1] for p in cp], [p[2] for p in cp], yerr=[[p[3] for p in cp], [p[4] for p in cp]],
                    fmt="o-", color=colors[codec], label=codec, ms=6, lw=1.5, capsize=3, zorder=3)
        ann += [(b, v, labels[id(c)], colors[codec]) for c, b, v, _, _ in cp]
    front = sorted((pts[i] for i in pareto([(p[1], p[2]) for p in pts], False)), key=lambda p: (p[1], p[2]))
    if front:
        ax.plot([p[1] for p in front], [p[2] for p in front], "--", color="0.35", lw=1, zorder=2,
                drawstyle="steps-post" if len(front) > 1 else "default")
        ax.scatter([p[1] for p in front], [p[2] for p in front], s=170, facecolors="none", edgecolors="black",
                   linewidths=1.3, zorder=4, label="Pareto frontier")
    ax.axhline(0.0, color="0.5", lw=0.8, zorder=1)
    span = max([abs(p[2]) + max(p[3], p[4]) for p in pts], default=0.0)
    if span > 20:  # a few % at 8 bits next to several-fold at 2 bits: linear near 0, log beyond 1%
        ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xlabel("bits per element with fixed state (K and V)")
    ax.set_ylabel("perplexity change vs exact (%, 95% CI)")
    exact = num(((doc["e2e"].get("exact") or {}).get("perplexity")))
    sub = f"\nexact perplexity {exact:.4g}" if exact is not None else ""
    ax.set_title(f"Perplexity change vs bits — {title}{sub}", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    if pts:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        ax.margins(x=0.12, y=0.1)
    else:
        ax.text(0.5, 0.5, "no cell reports a perplexity change", transform=ax.transAxes, ha="center")
    note = note_text(not_ok, sorted(set(missing)))
    fig.tight_layout(rect=(0, note_margin(fig, note), 1, 1))
    place_labels(ax, ann)
    add_note(fig, note)
    p = os.path.join(out_dir, "e2e_ppl_vs_bits.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    print(f"e2e_ppl_vs_bits: {len(pts)} cells, {len(front)} on the Pareto frontier")
    return p


def layer_proxy(c, metric, over, higher_better):
    """The cell's layer-level value of metric: the mean over layers (fidelity[metric].mean) or the worst
    layer's mean (per_layer <metric>_mean, worst by the metric's better direction)."""
    if over == "mean_layer":
        return num(((c.get("fidelity") or {}).get(metric) or {}).get("mean"))
    vals = [num(e.get(f"{metric}_mean")) for e in (c.get("per_layer") or []) if isinstance(e, dict)]
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return min(vals) if higher_better else max(vals)


def proxy_panel(ax, ok, labels, colors, metric, over, hb, corr):
    """One scatter: layer-level metric (x) vs e2e next-token KL mean (log y); returns label items and notes."""
    pts, missing = [], []
    for c in ok:
        x = layer_proxy(c, metric, over, hb)
        y = num((c["e2e"].get("kl") or {}).get("mean"))
        if x is None or y is None:
            missing.append(labels[id(c)])
            continue
        pts.append((c, x, y))
    positive = [y for _, _, y in pts if y > 0]
    floor = min(positive) / 10 if positive else 1e-12  # an exact codec's KL of 0 still gets a point
    zero = [f"{labels[id(c)]}: e2e KL {y:g}, drawn at {floor:.2g}" for c, _, y in pts if y < floor]
    ann = []
    for codec in colors:
        cp = [(c, x, max(y, floor)) for c, x, y in pts if c["codec"] == codec]
        if cp:
            ax.scatter([q[1] for q in cp], [q[2] for q in cp], color=colors[codec], label=codec, s=36, zorder=3)
            ann += [(x, y, labels[id(c)], colors[codec]) for c, x, y in cp]
    ax.set_yscale("log")
    rho = num((corr or {}).get("spearman"))
    n = (corr or {}).get("cells")
    what = "mean over layers" if over == "mean_layer" else "worst layer"
    ax.set_title(f"{metric} ({what}): Spearman ρ = {'n/a' if rho is None else f'{rho:+.3f}'}"
                 + (f" over {n} cells" if isinstance(n, int) else ""), fontsize=10)
    ax.set_xlabel(f"{metric} ({what}, {'higher' if hb else 'lower'} is better)")
    ax.set_ylabel("e2e next-token KL (mean, nats)")
    ax.grid(True, which="major", alpha=0.3)
    if pts:
        ax.margins(x=0.12, y=0.15)
    else:
        ax.text(0.5, 0.5, f"no cell reports {metric} ({over})", transform=ax.transAxes, ha="center")
    return ann, missing, zero, len(pts)


def plot_e2e_proxies(plt, doc, ok, not_ok, labels, colors, better, title, out_dir):
    """Per layer-level metric of e2e.proxy_correlation: its value per cell vs the e2e KL, one panel per
    'over' the correlation table lists, titled with that row's Spearman."""
    rows = doc["e2e"].get("proxy_correlation") or []
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    written = []
    for m in metrics:
        overs = [o for o in E2E_OVER if any(r["metric"] == m and r["over"] == o for r in rows)]
        fig, axes = plt.subplots(1, len(overs), figsize=(6.4 * len(overs), 5.4), squeeze=False)
        pending, missing, zero, counts = [], [], [], []
        for ax, over in zip(axes[0], overs):
            corr = next(r for r in rows if r["metric"] == m and r["over"] == over)
            ann, miss, z, n = proxy_panel(ax, ok, labels, colors, m, over, better.get(m, "higher") == "higher",
                                          corr)
            pending.append((ax, ann))
            missing += miss
            zero += z
            counts.append(n)
        handles = {l: h for ax in axes[0] for h, l in zip(*ax.get_legend_handles_labels())}
        if handles:
            fig.legend(list(handles.values()), list(handles), loc="upper center", ncol=min(len(handles), 8),
                       fontsize=9, bbox_to_anchor=(0.5, 0.945), frameon=False)
        fig.suptitle(f"Which proxy predicts model quality: {m} vs next-token KL — {title}")
        # One entry for all the cells without this metric (e.g. mass_lost: every codec that holds all tokens)
        lacking = list(dict.fromkeys(missing))
        extra = ([f"no {m} or e2e KL: {', '.join(lacking)}"] if lacking else []) + list(dict.fromkeys(zero))
        note = note_text(not_ok, extra)
        fig.tight_layout(rect=(0, note_margin(fig, note), 1, 0.9))
        for ax, ann in pending:
            place_labels(ax, ann)
        add_note(fig, note)
        p = os.path.join(out_dir, f"e2e_proxy_{slugify(m)}.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        print(f"e2e_proxy_{slugify(m)}: " + ", ".join(f"{o} {n} cells" for o, n in zip(overs, counts)))
        written.append(p)
    return written


def plot_e2e(plt, doc, out_dir, better):
    """The e2e figures of a whole run (one model, one correlation table): Δppl vs bits and the proxies."""
    cells = doc["cells"]
    ok = [c for c in cells if c["status"] == "ok"]
    not_ok = [c for c in cells if c["status"] != "ok"]
    labels = dict(zip(map(id, ok), unique_labels(ok)))
    colors = codec_colors(list(dict.fromkeys(c["codec"] for c in ok)))
    ds = doc["datasets"][0] if doc["datasets"] else {}
    title = title_for(ds, doc)
    written = [plot_e2e_ppl(plt, doc, ok, not_ok, labels, colors, title, out_dir)]
    return written + plot_e2e_proxies(plt, doc, ok, not_ok, labels, colors, better, title, out_dir)


def main(argv=None):
    ap = argparse.ArgumentParser(prog=PROG, description="Plots from a kvbench results directory (results.json).")
    ap.add_argument("results_dir", metavar="RESULTS_DIR", help="kvbench results directory (or its results.json)")
    ap.add_argument("--metric", default="cosine",
                    help="metric of the per-layer heat map (a name from results.json \"metrics\"; default cosine)")
    ap.add_argument("--out", metavar="DIR", help="where to write the PNGs (default: RESULTS_DIR)")
    args = ap.parse_args(argv)

    path, doc = load_results(args.results_dir)
    better = {}  # metric -> "higher" | "lower", in registry order
    for m in doc["metrics"]:
        if isinstance(m, dict) and isinstance(m.get("name"), str):
            better[m["name"]] = "lower" if m.get("better") == "lower" else "higher"
    if args.metric not in better:
        die(2, f"--metric {args.metric!r} is not a metric of {path}; allowed: {', '.join(better) or '(none)'}")

    out_dir = args.out or os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        die(2, f"--out {out_dir}: cannot create: {e.strerror}")

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"{PROG}: error: matplotlib is missing (Debian: apt-get install python3-matplotlib, "
              f"then run with /usr/bin/python3)", file=sys.stderr)
        return 1

    if "e2e" in doc:
        e2e_validate(path, doc)
    groups = group_by_dataset(doc)
    if not groups:
        die(3, f"{path}: no datasets")
    multi = len(groups) > 1
    written = []
    for ds, cells, slug in groups:
        written += plot_dataset(plt, doc, ds, cells, slug, multi, out_dir, args.metric, better)
    if "e2e" in doc:
        written += plot_e2e(plt, doc, out_dir, better)
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
