#!/usr/bin/env python3
"""Independent h5py + numpy implementation of the kvdump format (docs/dump-format.md §1), for cross-tool tests.

    make_h5py_dump.py OUT.h5 [--dtype float16|bfloat16|float32] [--bf16] [--seed S] [--fixed-strings]
                      [--obs-window W]
        Write a small valid dump (GQA 2:1 by default, float16 by default) with ref_out computed in numpy
        (float64, from the tensors as stored), and a sidecar OUT.h5.keys.f32: the keys of sequence s0,
        layer 0, as stored, in float32 [n_kv_heads, T, head_dim] (what kvbench's reader must return).
        With --obs-window W also the optional observation queries of §1.2: obs_positions = C-W .. C-1 per
        sequence and obs_queries [n_heads, W, head_dim] in every layer (the keys' dtype), and a sidecar
        OUT.h5.obs.f32: obs_queries of s0, layer 0, as stored, in float32 [n_heads, W, head_dim].

    make_h5py_dump.py --verify DUMP.h5
        Read a dump written by kvbench with h5py and check it: float16 keys come back as numpy float16,
        bfloat16 as uint16 with attribute dtype="bfloat16", ref_out equals exact attention recomputed
        in numpy from the stored tensors, and observation queries (when present) follow §1.2: obs_positions
        int64 [W], strictly increasing in [0, C), obs_queries [n_heads, W, head_dim] in every layer in the
        keys' dtype. Exit 0 when it does, 1 with a message otherwise.
"""
import argparse
import sys

import h5py
import numpy as np


def f32_to_bf16_bits(x):
    """float32 -> bfloat16 raw bits, round to nearest even (finite inputs)."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounding = 0x7FFF + ((u >> 16) & 1)
    return ((u + rounding) >> 16).astype(np.uint16)


def bf16_bits_to_f32(b):
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def exact_attention(K, V, q, scale):
    """K, V: [C, d] float64; q: [d]. softmax(scale * K q)^T V in float64."""
    s = scale * (K @ q)
    p = np.exp(s - s.max())
    p /= p.sum()
    return p @ V


def ref_out_of(keys, values, queries, C, scale):
    """keys/values [G, T, d], queries [H, Q, d] (float64, as stored) -> [H, Q, d] float64."""
    H, Q, d = queries.shape
    G = keys.shape[0]
    out = np.empty((H, Q, d))
    for h in range(H):
        g = h // (H // G)  # query head h reads KV head h / (n_heads / n_kv_heads)
        for i in range(Q):
            out[h, i] = exact_attention(keys[g, :C], values[g, :C], queries[h, i], scale)
    return out


def store(group, name, x, dtype, chunked):
    """Write float array x in `dtype`; return what the file holds, as float64."""
    kw = {}
    if chunked:
        kw = dict(chunks=(1, min(x.shape[1], 16), x.shape[2]), compression="gzip", compression_opts=4, shuffle=True)
    if dtype == "float16":
        a = x.astype(np.float16)
        group.create_dataset(name, data=a, **kw)
        return a.astype(np.float64)
    if dtype == "float32":
        a = x.astype(np.float32)
        group.create_dataset(name, data=a, **kw)
        return a.astype(np.float64)
    bits = f32_to_bf16_bits(x)
    ds = group.create_dataset(name, data=bits, **kw)
    ds.attrs["dtype"] = "bfloat16"
    return bf16_bits_to_f32(bits).astype(np.float64)


def write(args):
    rng = np.random.default_rng(args.seed)
    L, H, G, D = args.layers, args.heads, args.kv_heads, args.head_dim
    T, C = args.tokens, args.context
    scale = 1.0 / np.sqrt(D)

    def s(v):  # string attributes: variable-length UTF-8 (h5py's str) or fixed-length ASCII bytes
        return np.bytes_(v) if args.fixed_strings else v

    with h5py.File(args.out, "w") as f:
        a = f.attrs
        a["format"] = s("kvdump")
        a["format_version"] = 1
        a["model"] = s("h5py:random")
        a["model_revision"] = s("none")
        a["source"] = s("scripts/make_h5py_dump.py")
        a["n_layers"] = np.int32(L)  # any integer type is allowed
        a["n_heads"] = H
        a["n_kv_heads"] = G
        a["head_dim"] = D
        a["rope_applied"] = 1
        a["rope_style"] = s("half")
        a["rope_theta"] = 10000.0
        a["qk_norm"] = 0
        a["softmax_scale"] = scale
        a["attn_softcap"] = 0.0
        a["orig_dtype"] = s("bfloat16" if args.dtype == "bfloat16" else "float16")
        a["seed"] = args.seed
        seqs = f.create_group("sequences")
        for si in range(args.sequences):
            g = seqs.create_group(f"s{si}")
            g.attrs["n_tokens"] = T
            g.attrs["context_len"] = C
            g["tokens"] = rng.integers(0, 32000, size=T, dtype=np.int32)
            g["query_positions"] = np.arange(C, T, dtype=np.int64)
            W = getattr(args, "obs_window", 0)  # callers that build the Namespace themselves may leave it out
            if W:
                g["obs_positions"] = np.arange(C - W, C, dtype=np.int64)  # the last W prompt tokens
            layers = g.create_group("layers")
            for li in range(L):
                lg = layers.create_group(str(li))
                lg.attrs["sliding_window"] = 0
                K = store(lg, "keys", 2.0 * rng.standard_normal((G, T, D)), args.dtype, chunked=False)
                V = store(lg, "values", rng.standard_normal((G, T, D)), args.dtype, chunked=True)
                Q = store(lg, "queries", rng.standard_normal((H, T - C, D)), args.dtype, chunked=False)
                lg["ref_out"] = ref_out_of(K, V, Q, C, scale).astype(np.float32)
                if si == 0 and li == 0:
                    K.astype(np.float32).tofile(args.out + ".keys.f32")
                if W:
                    # Drawn after the other tensors, so a dump without them keeps its values.
                    O = store(lg, "obs_queries", rng.standard_normal((H, W, D)), args.dtype, chunked=li % 2 == 1)
                    if si == 0 and li == 0:
                        O.astype(np.float32).tofile(args.out + ".obs.f32")


def read_float(ds):
    x = ds[()]
    if x.dtype == np.uint16 and ds.attrs.get("dtype") in ("bfloat16", b"bfloat16"):
        return bf16_bits_to_f32(x).astype(np.float64)
    return x.astype(np.float64)


def dtype_of(ds):
    """The kvdump dtype of a float tensor dataset ("bfloat16" for uint16 + attribute)."""
    if ds.dtype == np.uint16 and ds.attrs.get("dtype") in ("bfloat16", b"bfloat16"):
        return "bfloat16"
    return str(ds.dtype)


def verify_obs(where, g, C, H, D):
    """docs/dump-format.md §1.2's observation queries of one sequence group; a problem or None."""
    layers = g["layers"]
    if "obs_positions" not in g:
        for lid, lg in layers.items():
            if "obs_queries" in lg:
                return f"{where}/layers/{lid}/obs_queries: present without {where}/obs_positions"
        return None
    pos = g["obs_positions"]
    if pos.dtype.kind not in "iu" or pos.ndim != 1 or pos.shape[0] < 1:
        return f"{where}/obs_positions: expected int64 [W >= 1], found {pos.dtype} {pos.shape}"
    p = pos[()].astype(np.int64)
    if (p < 0).any() or (p >= C).any() or (np.diff(p) <= 0).any():
        return f"{where}/obs_positions: expected strictly increasing in [0, {C}), found {p.tolist()}"
    W = p.shape[0]
    for lid, lg in layers.items():
        if "obs_queries" not in lg:
            return f"{where}/layers/{lid}/obs_queries: missing (the sequence has obs_positions)"
        o = lg["obs_queries"]
        if o.shape != (H, W, D):
            return f"{where}/layers/{lid}/obs_queries: expected shape {(H, W, D)}, found {o.shape}"
        if dtype_of(o) != dtype_of(lg["keys"]):
            keys = dtype_of(lg["keys"])
            return f"{where}/layers/{lid}/obs_queries: dtype {dtype_of(o)} differs from the keys' {keys}"
        if not np.isfinite(read_float(o)).all():
            return f"{where}/layers/{lid}/obs_queries: non-finite value"
    return None


def verify(path):
    with h5py.File(path, "r") as f:
        if f.attrs["format"] not in ("kvdump", b"kvdump") or int(f.attrs["format_version"]) != 1:
            return "not a kvdump v1"
        H, G = int(f.attrs["n_heads"]), int(f.attrs["n_kv_heads"])
        scale = float(f.attrs["softmax_scale"])
        D = int(f.attrs["head_dim"])
        for sid, g in f["sequences"].items():
            C = int(g.attrs["context_len"])
            problem = verify_obs(f"/sequences/{sid}", g, C, H, D)
            if problem:
                return problem
            for lid, lg in g["layers"].items():
                where = f"/sequences/{sid}/layers/{lid}"
                k = lg["keys"]
                if k.dtype not in (np.float16, np.float32) and not (
                        k.dtype == np.uint16 and k.attrs.get("dtype") in ("bfloat16", b"bfloat16")):
                    return f"{where}/keys: h5py sees dtype {k.dtype}"
                K, V, Q = read_float(k), read_float(lg["values"]), read_float(lg["queries"])
                if K.shape[0] != G or Q.shape[0] != H:
                    return f"{where}: shapes {K.shape} {Q.shape}"
                if "ref_out" in lg:
                    ref = lg["ref_out"][()].astype(np.float64)
                    mine = ref_out_of(K, V, Q, C, scale)
                    err = np.linalg.norm(mine - ref, axis=-1) / np.maximum(np.linalg.norm(mine, axis=-1), 1e-30)
                    if err.max() > 1e-5:
                        return f"{where}/ref_out: max relative error {err.max():.3g} vs numpy"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", help="dump to write")
    ap.add_argument("--verify", metavar="DUMP", help="check a kvbench-written dump with h5py instead")
    ap.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16")
    ap.add_argument("--bf16", action="store_true", help="same as --dtype bfloat16")
    ap.add_argument("--fixed-strings", action="store_true", help="write string attributes as fixed-length bytes")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=40)
    ap.add_argument("--context", type=int, default=32)
    ap.add_argument("--sequences", type=int, default=2)
    ap.add_argument("--obs-window", type=int, default=0, metavar="W",
                    help="also write W observation queries per sequence (positions C-W .. C-1; "
                         "docs/dump-format.md §1.2)")
    args = ap.parse_args()
    if args.verify:
        problem = verify(args.verify)
        if problem:
            print(f"{args.verify}: {problem}", file=sys.stderr)
            return 1
        print(f"{args.verify}: ok")
        return 0
    if not args.out:
        ap.error("OUT.h5 is required (or --verify DUMP)")
    if args.bf16:
        args.dtype = "bfloat16"
    if not 0 <= args.obs_window <= args.context:
        ap.error(f"--obs-window must be in [0, --context = {args.context}], got {args.obs_window}")
    write(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
