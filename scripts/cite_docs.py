#!/usr/bin/env python3
"""Rewrite citations of the former external spec into docs/ (issue 15, "self-contained docs").

Comments and messages used to cite sections of kvbench.md, codecs.md and style.md, which lived outside
the repository (../shared/spec/). Their content now lives in docs/, in the project's own words, with
its own section numbers. This script finds every such citation by pattern (so it works however the code
has been moved) and rewrites it from the mapping table below, e.g.

    codecs.md §1.8 pitfall 3      ->  docs/codecs.md §7.6 pitfall 3
    kvbench.md §5 (storage line)  ->  docs/metrics.md §6
    (§2.3) after a codecs.md cite ->  (docs/codecs.md §6.3)

Only comments and string literals are touched (a small lexer per language finds them). A bare "§N"
without a file name takes the file of the nearest citation before it in the same file (else after it,
else in a sibling file of the same stem, e.g. capture.cpp -> capture.h). The script is idempotent:
docs/ citations are recognised and left alone.

    python3 scripts/cite_docs.py            rewrite in place, print a summary
    python3 scripts/cite_docs.py --check    exit 1 if any spec citation remains (nothing is written)
    python3 scripts/cite_docs.py --dry-run  print what would change, write nothing
    python3 scripts/cite_docs.py --self-test

No dependencies beyond the Python 3 standard library.
"""
import argparse
import os
import re
import sys

# ---------------------------------------------------------------------------------------------------
# The mapping table: (spec file, section) -> docs/ file and section.
#
# A value is a list of (keyword regex or None, docs file, docs section or None). The first entry whose
# regex matches the source line of the citation wins; None matches always. A docs section of None cites
# the whole file. kvbench.md §5, §8 and §9 cover several topics that docs/ splits, so the words around
# the citation choose the section.

_KW = re.IGNORECASE


def _one(doc, sec=None):
    return [(None, doc, sec)]


MAPPING = {
    "kvbench": {
        "": _one("README.md"),
        "1": [(r"\bcompare", "results.md", "§7"), (r"\bmerge|\bshard", "results.md", "§5"),
              (None, "design.md", "§7")],
        "2": _one("design.md", "§8"),
        "3": _one("dump-format.md"),
        "3.1": [(r"ref_out", "protocol.md", "§4"), (r"root attr", "dump-format.md", "§1.1"),
                (None, "dump-format.md", "§1")],
        "3.2": _one("dump-format.md", "§2"),
        "3.3": _one("dump-format.md", "§3"),
        "4": _one("protocol.md", "§1"),
        "5": [(r"memory|storage|bytes|bits per element|b_eff", "metrics.md", "§6"),
              (r"throughput|timing|timed|\btime\b", "metrics.md", "§7"),
              (r"fidelity|per query", "metrics.md", "§2–§5"),
              (None, "metrics.md", None)],
        "6": _one("codecs.md", "§1"),
        "7": _one("config.md"),
        "8": [(r"csv|header|column", "results.md", "§3"), (r"shard|slurm|resume|merge", "results.md", "§5"),
              (r"plot", "results.md", "§6"), (r"atomic|temporar|rename", "results.md", "§4"),
              (None, "results.md", None)],
        "9": [(r"hostile|head_dim|degenerate|crash", "errors.md", "§4"), (r"message", "errors.md", "§1–§2"),
              (r"exit", "errors.md", "§1"), (None, "errors.md", None)],
    },
    "codecs": {
        "": _one("codecs.md"),
        '"training-free defaults"': _one("codecs.md", "§1.4"),
        '"how the codecs meet the harness (read first)"': _one("codecs.md", "§1"),
        "0": _one("codecs.md", "§1.1"),
        # QJL
        "1": _one("codecs.md", "§7"), "1.0": _one("codecs.md", "§7"), "1.1": _one("codecs.md", "§7.1"),
        "1.1 g1": _one("codecs.md", "§7.6 pitfall 1"), "1.2": _one("codecs.md", "§7.2"),
        "1.3": _one("codecs.md", "§7.3"), "1.4": _one("codecs.md", "§7.4"), "1.5": _one("codecs.md", "§7.5"),
        "1.6": _one("codecs.md", "§7.2"), "1.7": _one("codecs.md", "§7"), "1.8": _one("codecs.md", "§7.6"),
        # BalanceKV / uniform
        "2": _one("codecs.md", "§6"), "2.0": _one("codecs.md", "§6"), "2.1": _one("codecs.md", "§6.1"),
        "2.2": _one("codecs.md", "§6.2"), "2.2 pitfall 5": _one("codecs.md", "§6.2, §6.5 pitfall 5"),
        "2.3": _one("codecs.md", "§6.3"), "2.4": _one("codecs.md", "§6.4"), "2.5": _one("codecs.md", "§6"),
        "2.6": _one("codecs.md", "§6.5 pitfall 9"), "2.7": _one("codecs.md", "§6.5"),
        # H1B-KV
        "3": _one("codecs.md", "§8"), "3.0": _one("codecs.md", "§8.2"), "3.1": _one("codecs.md", "§8.1"),
        "3.2": _one("codecs.md", "§8.2"), "3.3": _one("codecs.md", "§8.3"), "3.4": _one("codecs.md", "§8.4"),
        "3.5": _one("codecs.md", "§8"), "3.6": _one("codecs.md", "§8.5"),
        # LOOKAT
        "4": _one("codecs.md", "§9"), "4.0": _one("codecs.md", "§9.3"), "4.1": _one("codecs.md", "§9.1"),
        "4.2": _one("codecs.md", "§9.2"), "4.3": _one("codecs.md", "§9.3"), "4.4": _one("codecs.md", "§9.2"),
        "4.5": _one("codecs.md", "§9"), "4.6": _one("codecs.md", "§9.5"),
        # KV-CAR
        "5": _one("codecs.md", "§10"), "5.0": _one("codecs.md", "§10.1"), "5.0.1": _one("codecs.md", "§10.1"),
        "5.0.2": _one("codecs.md", "§10.2"), "5.0.3": _one("codecs.md", "§10.3"),
        "5.1": _one("codecs.md", "§10.4"), "5.2": _one("codecs.md", "§10.5"), "5.3": _one("codecs.md", "§10.6"),
        "5.4": _one("codecs.md", "§10"), "5.5": _one("codecs.md", "§10.8"),
        # KIVI and INTn
        "6": _one("codecs.md", "§5"), "6.1": _one("codecs.md", "§5.1"), "6.2": _one("codecs.md", "§5.2"),
        "6.3": _one("codecs.md", "§5"), "6.4": _one("codecs.md", "§5"),
        "7": _one("codecs.md", "§4"),
        # Metrics
        "9": _one("metrics.md", "§1"), "9.1": _one("metrics.md", "§2"), "9.2": _one("metrics.md", "§3.5"),
        "9.3": _one("metrics.md", "§3.4"), "9.4": _one("metrics.md", "§3.1–§3.2"),
        "9.5": _one("metrics.md", "§3.3"), "9.6": _one("metrics.md", "§6"), "9.7": _one("metrics.md", "§7"),
        # Cited together, §9.4 and §9.5 mean their token-selection rule: metrics over the held set.
        "9.4–9.5": _one("metrics.md", "§4"),
        "10": _one("codecs.md"), "11": _one("codecs.md"), "12": _one("codecs.md"),
    },
    "style": {
        "": _one("design.md"),
        "2": _one("design.md"), "3": _one("design.md"), "3.1": _one("design.md", "§1"),
        "3.2": _one("design.md", "§2"), "3.3": _one("design.md", "§3"), "3.4": _one("design.md", "§4"),
        "3.5": _one("design.md", "§1"), "3.6": _one("design.md", "§8"),
        # docs/design.md §6 keeps the rule numbers of style.md §3.7, so "rule N" carries over.
        "3.7": _one("design.md", "§6"), "3.7 rule 6": _one("errors.md", "§3"), "4": _one("design.md"),
    },
}

# Numbered pitfalls cited as a third level ("§1.8.3" = pitfall 3 of §1.8).
for _spec_sec, _docs_sec in (("1.8", "§7.6"), ("2.7", "§6.5"), ("3.6", "§8.5"), ("4.6", "§9.5"), ("5.5", "§10.8")):
    for _n in range(1, 10):
        MAPPING["codecs"].setdefault(f"{_spec_sec}.{_n}", _one("codecs.md", f"{_docs_sec} pitfall {_n}"))

# ---------------------------------------------------------------------------------------------------
# Patterns

_NUM = r"\d+(?:\.\d+)*"
_SEC = r'§\s?(?:"[^"\n]{1,80}"|' + _NUM + r")"
_ITEM = (_SEC + r"(?:\s?[–-]\s?§?" + _NUM + r")?"
         + r"(?:,?\s(?:pitfall|rule|item)\s\d+|\sg\d+(?!\w))?")
_ITEMS = _ITEM + r"(?:\s?(?:,|/|\band\b)\s?" + _ITEM + r")*"
ITEM_RE = re.compile(
    r'§\s?(?P<sec>"[^"\n]{1,80}"|' + _NUM + r")"
    r"(?:\s?[–-]\s?§?(?P<end>" + _NUM + r"))?"
    r"(?P<qual>,?\s(?:pitfall|rule|item)\s\d+|\sg\d+(?!\w))?")
# A spec citation: an optional ../shared/spec/ path, the file, optional sections.
SPEC_RE = re.compile(
    r"(?:(?P<prefix>(?<![\w.~/-])[\w.~/-]*shared/spec/)|(?<![\w/.-]))"
    r"(?P<file>kvbench|codecs|style)\.md(?P<tick>`)?"
    r"(?:\s?(?P<items>" + _ITEMS + r"))?"
    r"|(?<![\w/.-])(?P<kvdump>kvdump)\s(?P<kitems>" + _ITEMS + r")")
DOCS_RE = re.compile(r"(?<![\w.-])docs/[\w.-]+\.(?:md|json)(?:\s?(?:" + _ITEMS + r"))?")
BARE_RE = re.compile(r"(?<![\w§])" + _ITEMS)
LEFTOVER_RE = re.compile(r"shared/spec/|(?<![\w/.-])(?:kvbench|codecs|style)\.md\b")

SCAN_ROOTS = ("codecs", "src", "tests", "scripts", "cmake", "kernels", "CMakeLists.txt")
MARKDOWN_FILES = ("README.md", "datasets/README.md")
C_EXT = (".h", ".hh", ".hpp", ".c", ".cc", ".cpp", ".cxx", ".cu", ".cuh", ".inl")
HASH_EXT = (".py", ".sh", ".bash", ".cmake")


# ---------------------------------------------------------------------------------------------------
# Lexers: the (start, end) spans of comments and string literals. Citations elsewhere are not touched.

def c_spans(text):
    """Comments and string literals of C, C++ and CUDA sources."""
    spans, i, n = [], 0, len(text)
    while i < n:
        ch = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            spans.append((i, j))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            spans.append((i, j))
            i = j
        elif ch == "R" and text.startswith('R"', i) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'R"([^()\\\s]{0,16})\(', text[i:])
            if not m:
                i += 1
                continue
            close = ")" + m.group(1) + '"'
            j = text.find(close, i + m.end())
            j = n if j < 0 else j + len(close)
            spans.append((i, j))
            i = j
        elif ch == '"' or (ch == "'" and (i == 0 or not text[i - 1].isalnum())):
            j = i + 1
            while j < n and text[j] != ch and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            spans.append((i, min(j + 1, n)))
            i = j + 1
        else:
            i += 1
    return spans


def hash_spans(text, shell):
    """Comments ('#' to end of line) and string literals of Python, shell and CMake files."""
    spans, i, n = [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "#" and (not shell or i == 0 or text[i - 1] in " \t\n;("):
            j = text.find("\n", i)
            j = n if j < 0 else j
            spans.append((i, j))
            i = j
        elif text.startswith('"""', i) or text.startswith("'''", i):
            j = text.find(text[i:i + 3], i + 3)
            j = n if j < 0 else j + 3
            spans.append((i, j))
            i = j
        elif ch in "\"'":
            j = i + 1
            while j < n and text[j] != ch and not (ch == "'" and not shell and text[j] == "\n"):
                j += 2 if (text[j] == "\\" and not (shell and ch == "'")) else 1
            spans.append((i, min(j + 1, n)))
            i = j + 1
        else:
            i += 1
    return spans


def spans_for(path, text):
    name = os.path.basename(path)
    if name.endswith(".md"):
        return [(0, len(text))]  # prose: all of it may cite
    if name.endswith(C_EXT):
        return c_spans(text)
    if name == "CMakeLists.txt" or name.endswith(HASH_EXT):
        return hash_spans(text, shell=name.endswith((".sh", ".bash")))
    return None


# ---------------------------------------------------------------------------------------------------
# Mapping one citation

class Report:
    def __init__(self):
        self.unmapped = []   # (path, line, citation text, why)
        self.parent = []     # (path, line, spec key, parent key used)
        self.outside = []    # (path, line, text): a citation outside comments and strings
        self.dangling = []   # (path, line, text, why): a docs/ citation of a file or section that does not exist


class DocsIndex:
    """The docs/ files of the tree, to check that docs/ citations point at real files and headings."""

    def __init__(self, root):
        self.root, self.bodies = root, {}

    def problem(self, cite):
        m = re.match(r"docs/([\w.-]+)", cite)
        name = m.group(1)
        if name not in self.bodies:
            path = os.path.join(self.root, "docs", name)
            try:
                with open(path, encoding="utf-8") as f:
                    self.bodies[name] = f.read()
            except OSError:
                self.bodies[name] = None
        body = self.bodies[name]
        if body is None:
            return f"docs/{name} does not exist"
        for num in re.findall(r"§(" + _NUM + ")", cite[m.end():]):
            if not re.search(r"^#+ §" + re.escape(num) + r"(?![\d.])", body, re.MULTILINE):
                return f"docs/{name} has no heading §{num}"
        return None


def _lookup(spec, key, line_text, where, report):
    """Docs targets [(doc, sec)] of one spec section key, or None."""
    table = MAPPING[spec]
    k, used = key, key
    while k not in table and "." in k:
        k = k.rsplit(".", 1)[0]
    if k not in table:
        return None
    if k != used:
        report.parent.append((where[0], where[1], f"{spec}.md §{used}", f"§{k}"))
    for kw, doc, sec in table[k]:
        if kw is None or re.search(kw, line_text, _KW):
            return doc, sec
    return None


def _expand(sec, end):
    """The section keys a range stands for: §4–§6 -> 4, 5, 6; §2.2–2.3 -> 2.2, 2.3."""
    if end is None:
        return [sec]
    a, b = sec.split("."), end.split(".")
    if len(a) == len(b) and a[:-1] == b[:-1] and int(a[-1]) < int(b[-1]) <= int(a[-1]) + 8:
        return [".".join(a[:-1] + [str(v)]) for v in range(int(a[-1]), int(b[-1]) + 1)]
    return [sec, end]


def map_citation(spec, items_text, line_text, where, report):
    """The docs/ targets [(docs file, section or None, qualifier)] of one spec citation, or None."""
    targets = []  # (doc, sec or None, qualifier to append)
    for m in ITEM_RE.finditer(items_text or ""):
        sec, end, qual = m.group("sec"), m.group("end"), m.group("qual") or ""
        sec = sec.lower() if sec.startswith('"') else sec
        key_q = sec + ((" " + qual.strip(", ")) if qual else "")
        key_r = f"{sec}–{end}" if end else None
        if key_r and key_r in MAPPING[spec]:
            t = _lookup(spec, key_r, line_text, where, report)
            keys = [] if t is None else None
        elif qual and key_q in MAPPING[spec]:
            t, qual, keys = _lookup(spec, key_q, line_text, where, report), "", None
        else:
            t, keys = None, _expand(sec, end)
        if keys is None:
            if t is None:
                return None
            targets.append((t[0], t[1], qual))
            continue
        mapped = [_lookup(spec, k, line_text, where, report) for k in keys]
        if any(x is None for x in mapped):
            return None
        if end and len(mapped) == 2 and mapped[0][0] == mapped[1][0] and None not in (mapped[0][1], mapped[1][1]):
            s0, s1 = mapped[0][1], mapped[1][1]
            targets.append((mapped[0][0], s0 if s0 == s1 else f"{s0}–{s1}", qual))
        else:
            targets.extend((d, s, "") for d, s in mapped[:-1])
            targets.append((mapped[-1][0], mapped[-1][1], qual))
    if not targets:
        t = _lookup(spec, "", line_text, where, report)
        return None if t is None else [(t[0], None, "")]
    return targets


def render(targets):
    """Consecutive targets in one docs file share its path; a whole-file target absorbs the others."""
    groups = []
    for doc, sec, qual in targets:
        if groups and groups[-1][0] == doc:
            groups[-1][1].append((sec, qual))
        else:
            groups.append((doc, [(sec, qual)]))
    out = []
    for doc, secs in groups:
        if any(s is None for s, _ in secs):
            out.append(f"docs/{doc}")
            continue
        seen = []
        for s, q in secs:
            if s + q not in seen:
                seen.append(s + q)
        out.append(f"docs/{doc} " + ", ".join(seen))
    return ", ".join(out)


# ---------------------------------------------------------------------------------------------------
# One file

def _line_of(text, pos):
    return text.count("\n", 0, pos) + 1


def _line_text(text, pos):
    a = text.rfind("\n", 0, pos) + 1
    b = text.find("\n", pos)
    return text[a:] if b < 0 else text[a:b]


def find_citations(text, spans):
    """Every citation in comments and strings, in order: (start, end, kind, spec file or None, items)."""
    found = []
    for a, b in spans:
        seg = text[a:b]
        taken = []
        for m in SPEC_RE.finditer(seg):
            spec = m.group("file") or "kvbench"
            items = m.group("items") if m.group("file") else m.group("kitems")
            found.append((a + m.start(), a + m.end(), "spec", spec, items, bool(m.group("tick"))))
            taken.append((m.start(), m.end()))
        for m in DOCS_RE.finditer(seg):
            if not any(s <= m.start() < e for s, e in taken):
                found.append((a + m.start(), a + m.end(), "docs", None, None, False))
                taken.append((m.start(), m.end()))
        for m in BARE_RE.finditer(seg):
            if not any(s <= m.start() < e for s, e in taken):
                found.append((a + m.start(), a + m.end(), "bare", None, m.group(0), False))
    found.sort()
    return found


def sibling_spec(path, cache):
    """The one spec file cited by files of the same stem beside `path` (capture.cpp -> capture.h)."""
    d, base = os.path.split(path)
    stem = base.split(".")[0]
    specs = set()
    try:
        names = os.listdir(d or ".")
    except OSError:
        return None
    for name in names:
        other = os.path.join(d, name)
        if name == base or name.split(".")[0] != stem or not os.path.isfile(other):
            continue
        if other not in cache:
            try:
                with open(other, encoding="utf-8") as f:
                    t = f.read()
            except (OSError, UnicodeDecodeError):
                t = ""
            sp = spans_for(other, t)
            cache[other] = [c[3] for c in find_citations(t, sp or []) if c[2] == "spec"]
        specs.update(cache[other])
    return specs.pop() if len(specs) == 1 else None


def rewrite_text(path, text, report, sib_cache, docs=None):
    """(new text, number of citations rewritten). With `docs`, existing docs/ citations are checked."""
    spans = spans_for(path, text)
    if spans is None:
        return text, 0
    cites = find_citations(text, spans)
    for m in LEFTOVER_RE.finditer(text):
        if not any(a <= m.start() < b for a, b in spans):
            report.outside.append((path, _line_of(text, m.start()), _line_text(text, m.start()).strip()))
    out, last, n = [], 0, 0
    prev = None  # targets of the replacement that ends at `last`, for merging "A, B" neighbours
    for idx, (start, end, kind, spec, items, tick) in enumerate(cites):
        where = (path, _line_of(text, start))
        if kind == "docs":
            why = docs.problem(text[start:end]) if docs else None
            if why:
                report.dangling.append(where + (text[start:end], why))
            continue
        if kind == "bare":
            ctx = [c for c in reversed(cites[:idx]) if c[2] != "bare"] or [c for c in cites[idx + 1:] if c[2] != "bare"]
            if ctx and ctx[0][2] == "docs":
                prev = None
                continue  # continues a docs/ citation: already done
            spec = ctx[0][3] if ctx else sibling_spec(path, sib_cache)
            if spec is None:
                report.unmapped.append(where + (items, "bare § with no spec file cited in this file or its siblings"))
                prev = None
                continue
        targets = map_citation(spec, items, _line_text(text, start), where, report)
        if targets is None:
            report.unmapped.append(where + (text[start:end], "no entry in the mapping table"))
            prev = None
            continue
        if prev is not None and text[last:start] == ", " and not tick:
            # "kvbench.md §5, codecs.md §9" -> one docs/metrics.md citation, not the path twice
            targets = prev + targets
            out[-1] = render(targets)
        else:
            out.append(text[last:start])
            new = render(targets)
            # `../shared/spec/kvbench.md` §3 -> `docs/dump-format.md`: the closing backtick follows the path
            out.append(new.replace(".md", ".md`", 1) if tick else new)
        prev = targets
        last = end
        n += 1
    out.append(text[last:])
    return "".join(out), n


# ---------------------------------------------------------------------------------------------------
# The tree

def iter_files(root, roots, skip):
    """Files under `roots` that can hold citations; docs/ (the citations' target, which names the old
    spec files on purpose) and this script (its mapping table) are skipped."""
    docs = os.path.abspath(os.path.join(root, "docs"))
    for r in roots:
        p = os.path.join(root, r)
        if os.path.isfile(p):
            if os.path.abspath(p) not in skip and not os.path.abspath(p).startswith(docs + os.sep):
                yield p
            continue
        for d, dirs, files in os.walk(p):
            dirs[:] = sorted(x for x in dirs if not x.startswith(".") and x != "__pycache__"
                             and os.path.abspath(os.path.join(d, x)) != docs)
            if os.path.abspath(d) == docs:
                continue
            for f in sorted(files):
                full = os.path.join(d, f)
                if os.path.abspath(full) not in skip and spans_for(full, "") is not None:
                    yield full


def run(root, roots, write, verbose):
    report, sib_cache, docs = Report(), {}, DocsIndex(root)
    changed, total = [], 0
    me = {os.path.abspath(__file__)}
    for path in iter_files(root, roots, me):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError):
            continue
        new, n = rewrite_text(path, text, report, sib_cache, docs)
        if n == 0:
            continue
        total += n
        changed.append((os.path.relpath(path, root), n))
        if verbose:
            show_diff(os.path.relpath(path, root), text, new)
        if write:
            tmp = path + ".cite_docs.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(new)
            os.replace(tmp, path)
    return changed, total, report


def show_diff(rel, old, new):
    for a, b in zip(old.split("\n"), new.split("\n")):
        if a != b:
            print(f"{rel}:\n  - {a.strip()}\n  + {b.strip()}")


def print_report(root, changed, total, report, verb):
    rel = lambda p: os.path.relpath(p, root)  # noqa: E731
    print(f"cite_docs: {total} citation(s) {verb} in {len(changed)} file(s)")
    for rel, n in changed:
        print(f"  {n:3d}  {rel}")
    for path, line, key, parent in report.parent:
        print(f"  note: {rel(path)}:{line}: {key} has no entry of its own; mapped as its parent {parent}")
    for path, line, cite, why in report.unmapped:
        print(f"  UNMAPPED: {rel(path)}:{line}: {cite!r}: {why}")
    for path, line, txt in report.outside:
        print(f"  OUTSIDE COMMENTS/STRINGS (not touched): {rel(path)}:{line}: {txt}")
    for path, line, cite, why in report.dangling:
        print(f"  DANGLING: {rel(path)}:{line}: {cite!r}: {why}")
    print(f"cite_docs: {len(report.unmapped)} unmapped, {len(report.outside)} outside comments and strings, "
          f"{len(report.dangling)} dangling docs/ citation(s)")


# ---------------------------------------------------------------------------------------------------
# Self-test: the rewriting rules on small inputs, including idempotency.

SELF_TEST = [
    ("a.h", "/// The codec interface (style.md §3.2, adapted to kvbench.md §4–§6).\n",
     "/// The codec interface (docs/design.md §2, adapted to docs/protocol.md §1, docs/metrics.md, "
     "docs/codecs.md §1).\n"),
    ("a.h", "/// Measured storage of one encoded layer, per KV head (kvbench.md §5).\n",
     "/// Measured storage of one encoded layer, per KV head (docs/metrics.md §6).\n"),
    ("a.cpp", "// qjl reference: codecs.md §1.3–§1.4 written literally.\n// x (§1.8 pitfall 3) and §1.8.3\n",
     "// qjl reference: docs/codecs.md §7.3–§7.4 written literally.\n"
     "// x (docs/codecs.md §7.6 pitfall 3) and docs/codecs.md §7.6 pitfall 3\n"),
    ("a.h", "/// walk (codecs.md §2.2, pitfall 5), see codecs.md §\"Training-free defaults\"\n",
     "/// walk (docs/codecs.md §6.2, §6.5 pitfall 5), see docs/codecs.md §1.4\n"),
    ("a.cpp", 'x = "codecs.md §3.3"; // kvdump §3.1 root attributes\ny = 1; // not code: codecs.md §9\n',
     'x = "docs/codecs.md §8.3"; // docs/dump-format.md §1.1 root attributes\n'
     'y = 1; // not code: docs/metrics.md §1\n'),
    ("a.py", '"""Plots (kvbench.md §8), from ../shared/spec/kvbench.md §7."""\n',
     '"""Plots (docs/results.md §6), from docs/config.md."""\n'),
    ("a.sh", "# Spread a sweep over SLURM, then merge the shards (kvbench.md §8).\necho '#x'\n",
     "# Spread a sweep over SLURM, then merge the shards (docs/results.md §5).\necho '#x'\n"),
    ("a.h", "/// ignored and (codecs.md §9.4–9.5): (style.md §3.3 / §3.7), (style.md §3.7 rule 6)\n",
     "/// ignored and (docs/metrics.md §4): (docs/design.md §3, §6), (docs/errors.md §3)\n"),
    ("a.cpp", "// checks of kvb/metrics (kvbench.md §5, codecs.md §9).\n"
     "// docs/codecs.md §7.1 and (§7.6 pitfall 3)\n",
     "// checks of kvb/metrics (docs/metrics.md).\n// docs/codecs.md §7.1 and (§7.6 pitfall 3)\n"),
    ("x.md", "see `../shared/spec/kvbench.md` §3. KV-CAR (codecs.md §5) as the proxy of §5.3; what §5.5 warns\n",
     "see `docs/dump-format.md`. KV-CAR (docs/codecs.md §10) as the proxy of docs/codecs.md §10.6; what "
     "docs/codecs.md §10.8 warns\n"),
]


def check_targets(root):
    """Every docs/ file and section the mapping table names must exist (a heading "## §N ...")."""
    docs, bad = DocsIndex(root), []
    for spec, table in MAPPING.items():
        for key, rules in table.items():
            for _, doc, sec in rules:
                why = docs.problem(f"docs/{doc} {sec or ''}")
                if why:
                    bad.append(f"{spec}.md §{key} -> {why}")
    return bad


def self_test(root):
    ok = True
    for problem in check_targets(root):
        ok = False
        print("FAIL mapping target:", problem)
    for name, src, want in SELF_TEST:
        report = Report()
        got, _ = rewrite_text(name, src, report, {})
        again, n2 = rewrite_text(name, got, Report(), {})
        if got != want or again != got or n2 != 0 or report.unmapped:
            ok = False
            print(f"FAIL {name}:\n  src:  {src!r}\n  want: {want!r}\n  got:  {got!r}\n  again: {again!r}"
                  f"\n  unmapped: {report.unmapped}")
    # Code is never touched, only reported; a comment on the same line is rewritten.
    report = Report()
    got, _ = rewrite_text("c.py", "y = codecs.md  # codecs.md §7\n", report, {})
    if got != "y = codecs.md  # docs/codecs.md §4\n" or len(report.outside) != 1:
        ok = False
        print(f"FAIL code outside comments: got {got!r}, outside {report.outside}")
    # A bare § with no spec file anywhere near it must be reported, not guessed.
    report = Report()
    got, n = rewrite_text("/nonexistent/b.cpp", "// see §4\n", report, {})
    if n != 0 or got != "// see §4\n" or len(report.unmapped) != 1:
        ok = False
        print(f"FAIL unmappable bare §: got {got!r}, unmapped {report.unmapped}")
    print("self-test:", "passed" if ok else "FAILED", f"({len(SELF_TEST) + 2} cases)")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    help="repository root (default: the parent of scripts/)")
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if any spec citation remains or a docs/ citation dangles")
    ap.add_argument("--dry-run", action="store_true", help="write nothing; print every changed line")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every changed line while rewriting")
    ap.add_argument("--self-test", action="store_true", help="run the built-in rewriting cases")
    ap.add_argument("--markdown", action="store_true",
                    help=f"also the user guides: {' '.join(MARKDOWN_FILES)} (prose, every line may cite)")
    ap.add_argument("paths", nargs="*", help=f"files or folders under --root (default: {' '.join(SCAN_ROOTS)})")
    a = ap.parse_args()
    if a.self_test:
        return 0 if self_test(a.root) else 1
    roots = a.paths or list(SCAN_ROOTS) + (list(MARKDOWN_FILES) if a.markdown else [])
    roots = [r for r in roots if os.path.exists(os.path.join(a.root, r))]
    write = not (a.check or a.dry_run)
    changed, total, report = run(a.root, roots, write, a.verbose or a.dry_run)
    print_report(a.root, changed, total, report, "rewritten" if write else "to rewrite")
    if a.check:
        remaining = total + len(report.unmapped) + len(report.outside) + len(report.dangling)
        print("cite_docs --check:",
              "no spec citations remain" if remaining == 0 else f"{remaining} spec citation(s) remain")
        return 1 if remaining else 0
    return 1 if report.unmapped else 0


if __name__ == "__main__":
    sys.exit(main())
