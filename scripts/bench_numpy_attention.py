#!/usr/bin/python3
"""The "what a user would write" row of the attention benchmark (issue 19 item 5): exact attention in float32
numpy (OpenBLAS matmuls), on the same shapes and the same dump scripts/bench_cpu.sh times, so its queries/s sit
beside kvbench's fp16 cell.

Per KV head, the queries of its G query heads at P query positions at once (G·P rows per matmul, as kvbench's
config positions_per_call = P does; the default P = every position, a batched decode step the way a numpy user
writes it), KV head fastest as kvbench orders its calls, s = (Q Kᵀ)·softmax_scale,
p = softmax(s), o = p V, with K and V [C, d] float32 (the dump's keys and values converted once, outside the
timing: twice the bytes kvbench's fp16 cache reads). The whole call (every
group of the layer) is timed, median of repeats; the last call's outputs are checked against a float64
computation (relative error < 1e-4) so a wrong row cannot post a fast time.

Usage: scripts/bench_numpy_attention.py DUMP.h5 [--queries 16] [--positions-per-call P] [--threads 2] [--min-time 1.0]
Prints queries/s and the BLAS numpy mapped (from /proc/self/maps).
"""
import argparse
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dump")
    ap.add_argument("--queries", type=int, default=16, help="query indices per head (bench_cpu.sh: 16)")
    ap.add_argument("--positions-per-call", type=int, default=0, help="query positions per matmul (0: all)")
    ap.add_argument("--threads", type=int, default=2, help="OpenBLAS threads (set before numpy loads)")
    ap.add_argument("--min-time", type=float, default=1.0)
    a = ap.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = str(a.threads)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    import h5py
    import numpy as np

    with h5py.File(a.dump, "r") as f:  # docs/dump-format.md: sequences/<s>/layers/<l>/{keys, values, queries}
        seq = f["sequences"][sorted(f["sequences"].keys())[0]]
        C = int(seq.attrs["context_len"])
        L = seq["layers"][sorted(seq["layers"].keys(), key=int)[0]]
        K = np.asarray(L["keys"][:, :C, :], dtype=np.float32)  # [kv_heads, C, d]
        V = np.asarray(L["values"][:, :C, :], dtype=np.float32)
        Q = np.asarray(L["queries"], dtype=np.float32)  # [n_heads, n_q, d]
        scale = float(f.attrs.get("softmax_scale", 1.0 / np.sqrt(K.shape[-1])))
    H, C, d = K.shape
    nh, nq, _ = Q.shape
    G = nh // H
    nq = min(nq, a.queries)
    P = nq if a.positions_per_call <= 0 else min(a.positions_per_call, nq)
    # The queries of a KV head at P positions in one matmul ([G·P, d] x [d, C]).
    blocks = [(p0, min(p0 + P, nq)) for p0 in range(0, nq, P)]
    Qb = [[np.ascontiguousarray(Q[h * G:(h + 1) * G, p0:p1, :].reshape(G * (p1 - p0), d)) for h in range(H)]
          for (p0, p1) in blocks]
    Kt = [np.ascontiguousarray(K[h].T) for h in range(H)]

    def call():
        out = None
        for qb in Qb:
            for h in range(H):
                s = (qb[h] @ Kt[h]) * scale
                s -= s.max(axis=1, keepdims=True)
                np.exp(s, out=s)
                s /= s.sum(axis=1, keepdims=True)
                out = s @ V[h]
        return out

    o = call()  # the last call's outputs: the last block of positions, the last KV head
    s64 = (Qb[-1][H - 1].astype(np.float64) @ K[H - 1].T.astype(np.float64)) * scale
    p64 = np.exp(s64 - s64.max(axis=1, keepdims=True))
    o64 = (p64 / p64.sum(axis=1, keepdims=True)) @ V[H - 1].astype(np.float64)
    err = float(np.linalg.norm(o - o64) / np.linalg.norm(o64))
    if not err < 1e-4:
        print(f"bench_numpy_attention: output differs from float64 by {err:.3g} (relative)", file=sys.stderr)
        return 3
    times = []
    total = 0.0
    while total < a.min_time or len(times) < 5:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
        total += times[-1]
    med = float(np.median(times))
    blas = "unknown"
    try:
        with open("/proc/self/maps") as m:
            libs = {line.split()[-1] for line in m if "blas" in line.lower() and line.split()[-1].startswith("/")}
        blas = ", ".join(sorted(os.path.basename(x) for x in libs)) or "none mapped"
    except OSError:
        pass
    queries = H * G * nq
    print(f"numpy float32 attention: C = {C}, head_dim {d}, {queries} queries ({nh} heads x {nq}), {G * P} per "
          f"matmul, {a.threads} threads: {queries / med:.1f} queries/s (median of {len(times)}), BLAS {blas}")


if __name__ == "__main__":
    sys.exit(main())
