#!/usr/bin/env python3
"""Record a Hugging Face `transformers` causal LM into a kvdump (docs/dump-format.md; README "Record your own model").

    .venv/bin/python scripts/record_kv.py --model Qwen/Qwen2.5-0.5B --text my.txt \\
        --context-len 4096 --queries 32 --sequences 2 --dtype bfloat16 --out data/qwen2.5-0.5b.h5

    .venv/bin/python scripts/record_kv.py --config-json llama.json --random-init --seed 1 \\
        --context-len 96 --queries 8 --dtype float32 --out data/rand-llama.h5

What is recorded, per sequence of T = C + Q tokens (consecutive windows of the text, ids file or seeded ids):
  keys, values  [n_kv_heads, T, head_dim]  the model's own cache (past_key_values) after a causal forward pass
                over the T tokens: post-RoPE as HF caches them, one entry per KV head (never repeated per
                query head).
  queries       [n_heads, Q, head_dim]     token C+i (i < Q) run as a decode step at position C+i over exactly
                the first C cached tokens, one query per step, never appended to the cache (its own key is
                masked out, so every layer of that step sees the same C tokens as kvbench's protocol).
                Captured inside the attention module after q_norm (if any) and RoPE, exactly as the model
                applies them (a patched apply_rotary_pos_emb; GPT-2: the query handed to _attn).
  ref_out       [n_heads, Q, head_dim]     float32: the model's own attention output of that step (per head,
                the input of o_proj / c_proj), i.e. attention of the recorded query over the C cached tokens.
  obs_positions [W] and obs_queries [n_heads, W, head_dim]  (--obs-window W, default 32, clamped to C; 0 = none)
                the queries of the last W prompt tokens C-W..C-1, captured in the same way during the causal
                pass (post-q_norm, post-RoPE), for observation-window eviction codecs (docs/dump-format.md §1.2).
Before writing, the recorder recomputes exact float64 attention from the tensors as stored and checks it
against ref_out with kvbench's tolerances (rel-L2 1e-3 for float32, 3e-2 for 16-bit), so a wrong scale,
RoPE or GQA mapping fails here already. The observation queries are checked the same way against the causal
pass's own attention output at their positions (over tokens 0..p).

Supported families: rotate_half RoPE with full rotary dimension and o_proj (llama, mistral, mixtral, qwen2,
qwen2_moe, gemma, olmo, starcoder2) and gpt2 (no RoPE). Attention runs in eager mode. float16 needs a CUDA
device (torch's CPU kernels have no half matmul); bfloat16 and float32 run on CPU.
"""
import argparse
import datetime
import hashlib
import json
import math
import os
import sys

import numpy as np

ROPE_HALF_FAMILIES = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "gemma", "olmo", "starcoder2")
SLIDING_FAMILIES = ("mistral", "mixtral", "qwen2", "qwen2_moe", "starcoder2")
DTYPES = ("float16", "bfloat16", "float32")


def fail(msg, code=2):
    print(f"record_kv: {msg}", file=sys.stderr)
    sys.exit(code)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_argument_group("model")
    src.add_argument("--model", help="HF model name or local path (from_pretrained)")
    src.add_argument("--revision", help="HF revision (branch, tag or commit) for --model")
    src.add_argument("--config-json", help="a config.json to build the model from (with --random-init)")
    src.add_argument("--random-init", action="store_true", help="randomly initialised weights (no download)")
    src.add_argument("--seed", type=int, default=0, help="seed of the random weights and of generated token ids")
    src.add_argument("--tokenizer", help="tokenizer name or path (default: --model's)")
    tok = ap.add_argument_group("tokens")
    tok.add_argument("--text", help="UTF-8 text file, tokenized and cut into consecutive T-token windows")
    tok.add_argument("--token-ids", help="file of whitespace-separated token ids, cut into consecutive T-token windows")
    rec = ap.add_argument_group("recording")
    rec.add_argument("--context-len", "-C", type=int, required=True, help="C: cached tokens the queries attend to")
    rec.add_argument("--queries", "-Q", type=int, default=32, help="Q: recorded queries (positions C..C+Q-1)")
    rec.add_argument("--sequences", "-N", type=int, default=1, help="number of sequences")
    rec.add_argument("--obs-window", type=int, default=32, metavar="W",
                     help="observation queries: the queries of the last W prompt tokens C-W..C-1, what SnapKV/H2O-"
                          "style eviction scores the cache with (clamped to C; 0 = none)")
    rec.add_argument("--dtype", choices=DTYPES, default="bfloat16", help="compute dtype and stored dtype")
    rec.add_argument("--layers", help="comma-separated subset of model layers (stored as layers 0..k-1 in that order)")
    rec.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    rec.add_argument("--query-batch", type=int, default=8, help="decode steps run together (memory vs speed)")
    rec.add_argument("--prefill-chunk", type=int, default=2048, help="tokens per prefill forward call")
    rec.add_argument("--out", required=True, help="output kvdump (.h5)")
    a = ap.parse_args(argv)
    if bool(a.model) == bool(a.config_json):
        ap.error("give exactly one of --model NAME_OR_PATH or --config-json FILE")
    if a.config_json and not a.random_init:
        ap.error("--config-json builds a model without weights: add --random-init (and --seed)")
    if a.text and a.token_ids:
        ap.error("give at most one of --text and --token-ids")
    if not (a.text or a.token_ids or a.random_init):
        ap.error("give --text FILE or --token-ids FILE (seeded ids are only for --random-init)")
    if a.context_len < 1 or a.queries < 1 or a.sequences < 1 or a.query_batch < 1 or a.prefill_chunk < 1:
        ap.error("--context-len, --queries, --sequences, --query-batch and --prefill-chunk must be >= 1")
    if a.obs_window < 0:
        ap.error(f"--obs-window: expected >= 0 (0 = none), got {a.obs_window}")
    return a


# ---------------------------------------------------------------------------------------------- model
def load_model(a, torch, transformers):
    dtype = getattr(torch, a.dtype)
    if a.config_json:
        with open(a.config_json, "rb") as f:
            raw = f.read()
        cfg_dict = json.loads(raw)
        if "model_type" not in cfg_dict:
            fail(f"{a.config_json}: no 'model_type' key (e.g. \"llama\", \"qwen2\", \"gpt2\")")
        config = transformers.AutoConfig.for_model(**cfg_dict)
        config._attn_implementation = "eager"
        torch.manual_seed(a.seed)
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
        model = model.to(dtype)
        name = f"random-init:{config.model_type}"
        revision = hashlib.sha256(raw).hexdigest()
    else:
        kw = dict(torch_dtype=dtype, attn_implementation="eager")
        if a.revision:
            kw["revision"] = a.revision
        model = transformers.AutoModelForCausalLM.from_pretrained(a.model, **kw)
        config = model.config
        name = a.model
        revision = getattr(config, "_commit_hash", None)
        if not revision:
            revision = hashlib.sha256(config.to_json_string(use_diff=False).encode()).hexdigest()
    model.eval()
    return model, config, name, revision


def pick_device(a, torch):
    dev = a.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cpu" and a.dtype == "float16":
        fail("--dtype float16 needs a CUDA device (torch's CPU kernels have no float16 matmul); "
             "use --dtype bfloat16 or float32 on CPU")
    return torch.device(dev)


def attention_modules(model, config):
    """[(layer index, attention module)] in layer order."""
    if config.model_type == "gpt2":
        return [(i, blk.attn) for i, blk in enumerate(model.transformer.h)]
    return [(i, layer.self_attn) for i, layer in enumerate(model.model.layers)]


def model_shape(config, attn0):
    mt = config.model_type
    if mt == "gpt2":
        H = config.n_head
        D = config.n_embd // H
        if getattr(config, "scale_attn_by_inverse_layer_idx", False) or not getattr(config, "scale_attn_weights", True):
            fail("gpt2 configs with scale_attn_by_inverse_layer_idx or without scale_attn_weights are not supported")
        return dict(n_layers=config.n_layer, n_heads=H, n_kv_heads=H, head_dim=D, rope_style="none",
                    rope_theta=0.0, rope_applied=0, scale=1.0 / math.sqrt(D))
    if mt not in ROPE_HALF_FAMILIES:
        fail(f"model_type '{mt}' is not supported (supported: {', '.join(ROPE_HALF_FAMILIES + ('gpt2',))})")
    if getattr(config, "partial_rotary_factor", 1.0) not in (None, 1, 1.0):
        fail(f"model_type '{mt}': partial rotary embeddings are not supported")
    H = config.num_attention_heads
    G = getattr(config, "num_key_value_heads", None) or H
    D = getattr(attn0, "head_dim", None) or getattr(config, "head_dim", None) or config.hidden_size // H
    if getattr(config, "attn_logit_softcapping", None):
        fail(f"model_type '{mt}': attention logit soft-capping is not supported")
    return dict(n_layers=config.num_hidden_layers, n_heads=H, n_kv_heads=G, head_dim=D, rope_style="half",
                rope_theta=float(getattr(config, "rope_theta", 10000.0)), rope_applied=1, scale=1.0 / math.sqrt(D))


def widen_rotary_tables(model, config, T):
    """Some families (qwen2, mistral, ... in transformers 4.40) build cos/sin tables of length kv_seq_len and
    index them with position_ids; a decode step at position C+i over a C-token cache then indexes past the
    table. Ask for tables covering all T positions instead (cos[position_ids] is the same, only longer)."""
    import inspect
    for _, attn in attention_modules(model, config):
        rot = getattr(attn, "rotary_emb", None)
        if rot is None or "seq_len" not in inspect.signature(rot.forward).parameters:
            continue
        orig = rot.forward

        def forward(x, position_ids=None, seq_len=None, _orig=orig):
            return _orig(x, seq_len=max(seq_len or 0, T)) if position_ids is None else \
                _orig(x, position_ids, seq_len=max(seq_len or 0, T))
        rot.forward = forward


def has_qk_norm(config, attn0):
    names = {n for n, _ in attn0.named_modules()}
    return int(bool(getattr(config, "use_qk_norm", False)) or any(
        n.split(".")[-1] in ("q_norm", "q_layernorm", "query_layernorm") for n in names))


class Capture:
    """Captures, for the decode steps, each attention module's post-RoPE query and its per-head output; and
    during the causal pass (prefill mode), those of the prompt positions [obs_lo, obs_hi)."""

    def __init__(self, model, config, layers, torch):
        self.torch = torch
        self.current = None  # layer index of the attention module now running (None: a layer not recorded)
        self.active = False
        self.q = {}          # layer -> [B, H, 1, D]
        self.o = {}          # layer -> [B, 1, H*D]
        self.prefill = False  # prefill mode: keep the positions [obs_lo, obs_hi) of the chunk at chunk_start
        self.chunk_start = 0
        self.obs_lo = self.obs_hi = 0
        self.obs_q = {}      # layer -> [[H, n, D], ...] in position order
        self.obs_o = {}      # layer -> [[n, H*D], ...]
        self.handles = []
        self.restore = []
        mods = attention_modules(model, config)
        wanted = set(layers)
        gpt2 = config.model_type == "gpt2"
        for li, attn in mods:
            # Every module says which layer runs, so a layer that is not recorded never writes another's slot.
            self.handles.append(attn.register_forward_pre_hook(self._enter(li if li in wanted else None)))
            if li not in wanted:
                continue
            out_proj = attn.c_proj if gpt2 else attn.o_proj
            self.handles.append(out_proj.register_forward_pre_hook(self._out(li)))
            if gpt2:
                for meth in ("_attn", "_upcast_and_reordered_attn"):
                    orig = getattr(attn, meth)
                    setattr(attn, meth, self._wrap_gpt2(orig, li))
                    self.restore.append((attn, meth, None))
        if not gpt2:
            modname = type(mods[0][1]).__module__
            mod = sys.modules[modname]
            if not hasattr(mod, "apply_rotary_pos_emb"):
                fail(f"{modname} has no apply_rotary_pos_emb to capture queries from")
            orig = mod.apply_rotary_pos_emb
            cap = self

            def patched(q, k, *args, **kw):
                qe, ke = orig(q, k, *args, **kw)
                if cap.active and cap.current is not None:
                    cap.q[cap.current] = qe.detach()
                if cap.prefill and cap.current is not None:
                    cap._keep_obs_q(cap.current, qe)
                return qe, ke

            mod.apply_rotary_pos_emb = patched
            self.restore.append((mod, "apply_rotary_pos_emb", orig))

    def _enter(self, li):
        def hook(_m, _args):
            self.current = li
        return hook

    def _out(self, li):
        def hook(_m, args):
            if self.active:
                self.o[li] = args[0].detach()
            if self.prefill:
                x = args[0]  # [1, n, H*D]
                lo, hi = self._overlap(x.shape[1])
                if lo < hi:
                    self.obs_o.setdefault(li, []).append(x[0, lo:hi].detach())
        return hook

    def _overlap(self, n):
        """The observation positions inside the current chunk, as offsets into it."""
        s = self.chunk_start
        return max(self.obs_lo, s) - s, min(self.obs_hi, s + n) - s

    def _keep_obs_q(self, li, q):
        lo, hi = self._overlap(q.shape[2])  # q: [1, H, n, D]
        if lo < hi:
            self.obs_q.setdefault(li, []).append(q[0, :, lo:hi].detach())

    def _wrap_gpt2(self, orig, li):
        def wrapped(query, key, value, *args, **kw):
            if self.active:
                self.q[li] = query.detach()
            if self.prefill:
                self._keep_obs_q(li, query)
            return orig(query, key, value, *args, **kw)
        return wrapped

    def close(self):
        for h in self.handles:
            h.remove()
        for obj, name, orig in self.restore:
            if orig is None:
                delattr(obj, name)  # instance attribute shadowing the class method
            else:
                setattr(obj, name, orig)


# ---------------------------------------------------------------------------------------------- tokens
def token_windows(a, config, T, torch):
    N = a.sequences
    if a.token_ids:
        with open(a.token_ids) as f:
            ids = [int(x) for x in f.read().split()]
        if len(ids) < N * T:
            fail(f"{a.token_ids}: {len(ids)} token ids, need {N} x {T} = {N * T}")
        return [ids[s * T:(s + 1) * T] for s in range(N)]
    if a.text:
        tok_name = a.tokenizer or a.model
        if not tok_name:
            fail("--text needs a tokenizer: --tokenizer NAME_OR_PATH (or --model)")
        import transformers
        tokz = transformers.AutoTokenizer.from_pretrained(tok_name, revision=a.revision if a.model else None)
        with open(a.text, encoding="utf-8") as f:
            text = f.read()
        ids = tokz(text, add_special_tokens=False)["input_ids"]
        bos = tokz.bos_token_id
        probe = tokz("a")["input_ids"]
        lead = [bos] if bos is not None and probe and probe[0] == bos else []
        n = T - len(lead)
        if len(ids) < N * n:
            fail(f"{a.text}: {len(ids)} tokens, need {N} x {n} = {N * n} (fewer --sequences or a shorter context)")
        return [lead + ids[s * n:(s + 1) * n] for s in range(N)]
    g = torch.Generator().manual_seed(a.seed + 1)
    V = config.vocab_size
    return [torch.randint(0, V, (T,), generator=g).tolist() for _ in range(N)]


# ---------------------------------------------------------------------------------------------- recording
def legacy(pkv):
    if hasattr(pkv, "to_legacy_cache"):
        pkv = pkv.to_legacy_cache()
    return tuple((k, v) for k, v in pkv)


def record_sequence(model, cap, tokens, C, Q, W, layers, a, torch, device):
    """{layer: (keys, values, queries, ref_out, obs_queries or None, the causal pass's attention output at the
    observation positions or None)}."""
    T = C + Q
    ids = torch.tensor([tokens], dtype=torch.long, device=device)
    with torch.no_grad():
        # 1. Causal forward over all T tokens (in chunks): the model's cache, keys/values of every token, and
        #    the queries of the prompt positions C-W..C-1 with the attention output there.
        pkv = None
        cap.obs_q.clear()
        cap.obs_o.clear()
        cap.obs_lo, cap.obs_hi = C - W, C
        for s in range(0, T, a.prefill_chunk):
            cap.chunk_start = s
            cap.prefill = W > 0
            try:
                out = model(input_ids=ids[:, s:s + a.prefill_chunk], past_key_values=pkv, use_cache=True)
            finally:
                cap.prefill = False
            pkv = out.past_key_values
        cache = legacy(pkv)
        obs = {l: (None, None) for l in layers}
        if W > 0:
            for l in layers:
                if l not in cap.obs_q or l not in cap.obs_o:
                    fail(f"layer {l}: the prompt's queries or attention outputs were not captured in the causal pass "
                         "(unsupported attention code)")
                oq = torch.cat(cap.obs_q[l], 1)  # [H, W, D]
                H, D = oq.shape[0], oq.shape[2]
                oo = torch.cat(cap.obs_o[l], 0).reshape(-1, H, D).transpose(0, 1)  # [H, W, D]
                if oq.shape[1] != W or oo.shape[1] != W:
                    fail(f"layer {l}: captured {oq.shape[1]} observation queries and {oo.shape[1]} outputs, expected {W}")
                obs[l] = (oq, oo)
        kv = {l: (cache[l][0][0], cache[l][1][0]) for l in layers}  # [G, T, D] each
        # 2. Decode steps: token C+i at position C+i over the first C cached tokens, its own key masked out.
        qs = {l: [] for l in layers}
        os_ = {l: [] for l in layers}
        for s in range(0, Q, a.query_batch):
            b = min(a.query_batch, Q - s)
            past = tuple((k[:, :, :C].expand(b, -1, -1, -1).contiguous(), v[:, :, :C].expand(b, -1, -1, -1).contiguous())
                         for k, v in cache)
            step_ids = ids[0, C + s:C + s + b].view(b, 1)
            pos = torch.arange(C + s, C + s + b, device=device).view(b, 1)
            mask = torch.ones(b, C + 1, dtype=torch.long, device=device)
            mask[:, C] = 0
            cap.q.clear()
            cap.o.clear()
            cap.active = True
            try:
                model(input_ids=step_ids, past_key_values=past, attention_mask=mask, position_ids=pos, use_cache=True)
            finally:
                cap.active = False
            for l in layers:
                if l not in cap.q or l not in cap.o:
                    fail(f"layer {l}: the query or the attention output was not captured (unsupported attention code)")
                q = cap.q[l]  # [b, H, 1, D]
                H, D = q.shape[1], q.shape[3]
                qs[l].append(q[:, :, 0, :].transpose(0, 1))                       # [H, b, D]
                os_[l].append(cap.o[l].reshape(b, H, D).transpose(0, 1))         # [H, b, D]
        return {l: (kv[l][0], kv[l][1], torch.cat(qs[l], 1), torch.cat(os_[l], 1)) + obs[l] for l in layers}


def to_numpy_stored(x, dtype, torch):
    """Tensor in the compute dtype -> (array to store, float64 view of what is stored)."""
    x = x.detach().cpu().contiguous()
    if dtype == "bfloat16":
        bits = x.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        return bits, (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    arr = x.to(getattr(torch, dtype)).numpy()
    return arr, arr.astype(np.float64)


def exact_attention(K, V, Qm, C, scale):
    """K, V [G, T, D]; Qm [H, Q, D] float64 -> [H, Q, D]: softmax(scale K q) V over the first C tokens."""
    H, G = Qm.shape[0], K.shape[0]
    out = np.empty_like(Qm)
    for h in range(H):
        g = h // (H // G)
        s = scale * np.einsum("qd,td->qt", Qm[h], K[g, :C])
        s -= s.max(axis=1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=1, keepdims=True)
        out[h] = p @ V[g, :C]
    return out


def exact_attention_causal(K, V, Qm, positions, scale):
    """K, V [G, T, D]; Qm [H, W, D] float64; query i at positions[i] attends to tokens 0..positions[i]."""
    H, G = Qm.shape[0], K.shape[0]
    out = np.empty_like(Qm)
    for h in range(H):
        g = h // (H // G)
        for i, p in enumerate(positions):
            s = scale * (K[g, :p + 1] @ Qm[h, i])
            w = np.exp(s - s.max())
            out[h, i] = (w / w.sum()) @ V[g, :p + 1]
    return out


def rel_l2_rows(mine, ref):
    return np.linalg.norm(mine - ref, axis=-1) / np.maximum(np.linalg.norm(mine, axis=-1), 1e-30)


def write_dataset(group, name, arr, dtype):
    chunks = (1, min(arr.shape[1], 1024), arr.shape[2]) if arr.shape[1] > 1024 else None
    ds = group.create_dataset(name, data=arr, chunks=chunks)
    if dtype == "bfloat16":
        ds.attrs["dtype"] = "bfloat16"


def main(argv=None):
    a = parse_args(argv)
    import h5py
    import torch
    import transformers

    torch.set_grad_enabled(False)
    device = pick_device(a, torch)
    model, config, name, revision = load_model(a, torch, transformers)
    model.to(device)
    mods = attention_modules(model, config)
    shp = model_shape(config, mods[0][1])
    L = shp["n_layers"]
    if a.layers:
        try:
            layers = [int(x) for x in a.layers.split(",") if x.strip() != ""]
        except ValueError:
            fail(f"--layers '{a.layers}': expected comma-separated layer indices")
        bad = [l for l in layers if not 0 <= l < L] + [l for i, l in enumerate(layers) if l in layers[:i]]
        if not layers or bad:
            fail(f"--layers '{a.layers}': need distinct indices in 0..{L - 1}")
    else:
        layers = list(range(L))
    C, Q = a.context_len, a.queries
    T = C + Q
    W = min(a.obs_window, C)
    sw = getattr(config, "sliding_window", None)
    if config.model_type in SLIDING_FAMILIES and sw and C + 1 > sw:
        fail(f"--context-len {C} reaches the model's sliding_window {sw}: not supported (use C < {sw})")
    maxpos = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if maxpos and T > maxpos:
        fail(f"C + Q = {T} exceeds the model's max_position_embeddings {maxpos}")
    seqs = token_windows(a, config, T, torch)
    tol = 1e-3 if a.dtype == "float32" else 3e-2
    scale = shp["scale"]

    widen_rotary_tables(model, config, T)
    cap = Capture(model, config, layers, torch)
    tmp = a.out + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    worst = 0.0
    try:
        with h5py.File(tmp, "w") as f:
            at = f.attrs
            at["format"] = "kvdump"
            at["format_version"] = 1
            at["model"] = name
            at["model_revision"] = revision
            at["source"] = f"kvbench record_kv.py (transformers {transformers.__version__}, torch {torch.__version__})"
            at["n_layers"] = len(layers)
            at["n_heads"] = shp["n_heads"]
            at["n_kv_heads"] = shp["n_kv_heads"]
            at["head_dim"] = shp["head_dim"]
            at["rope_applied"] = shp["rope_applied"]
            at["rope_style"] = shp["rope_style"]
            at["rope_theta"] = shp["rope_theta"]
            at["qk_norm"] = has_qk_norm(config, mods[0][1])
            at["softmax_scale"] = scale
            at["attn_softcap"] = 0.0
            at["orig_dtype"] = a.dtype
            at["recorded_layers"] = ",".join(str(l) for l in layers)
            if a.random_init:
                at["seed"] = a.seed
            at["created_utc"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            sg = f.create_group("sequences")
            for si, toks in enumerate(seqs):
                rec = record_sequence(model, cap, toks, C, Q, W, layers, a, torch, device)
                g = sg.create_group(f"s{si}")
                g.attrs["n_tokens"] = T
                g.attrs["context_len"] = C
                g["tokens"] = np.asarray(toks, dtype=np.int32)
                g["query_positions"] = np.arange(C, T, dtype=np.int64)
                if W > 0:
                    g["obs_positions"] = np.arange(C - W, C, dtype=np.int64)
                lg_all = g.create_group("layers")
                for j, l in enumerate(layers):
                    k, v, q, o, oq, oo = rec[l]
                    if k.shape != (shp["n_kv_heads"], T, shp["head_dim"]) or q.shape != (shp["n_heads"], Q, shp["head_dim"]):
                        fail(f"layer {l}: unexpected cache/query shapes {tuple(k.shape)} {tuple(q.shape)}")
                    lg = lg_all.create_group(str(j))
                    lg.attrs["sliding_window"] = 0
                    lg.attrs["model_layer"] = l
                    ka, k64 = to_numpy_stored(k, a.dtype, torch)
                    va, v64 = to_numpy_stored(v, a.dtype, torch)
                    qa, q64 = to_numpy_stored(q, a.dtype, torch)
                    ref = o.detach().cpu().float().numpy()
                    mine = exact_attention(k64, v64, q64, C, scale)
                    err = rel_l2_rows(mine, ref)
                    worst = max(worst, float(err.max()))
                    if err.max() > tol:
                        h, i = np.unravel_index(int(err.argmax()), err.shape)
                        fail(f"sequence s{si}, layer {l}: exact attention of the captured queries over the first {C} "
                             f"cached tokens differs from the model's own attention output by rel-L2 {err.max():.3g} "
                             f"(> {tol:g}) at head {h}, query {i}: query capture does not match this model", 1)
                    write_dataset(lg, "keys", ka, a.dtype)
                    write_dataset(lg, "values", va, a.dtype)
                    write_dataset(lg, "queries", qa, a.dtype)
                    lg["ref_out"] = ref.astype(np.float32)
                    if W > 0:
                        if oq.shape != (shp["n_heads"], W, shp["head_dim"]):
                            fail(f"layer {l}: unexpected observation query shape {tuple(oq.shape)}")
                        oa, o64 = to_numpy_stored(oq, a.dtype, torch)
                        # The causal pass's own attention at position p covers tokens 0..p.
                        err = rel_l2_rows(exact_attention_causal(k64, v64, o64, range(C - W, C), scale),
                                          oo.detach().cpu().double().numpy())
                        worst = max(worst, float(err.max()))
                        if err.max() > tol:
                            h, i = np.unravel_index(int(err.argmax()), err.shape)
                            fail(f"sequence s{si}, layer {l}: exact attention of the observation query at position "
                                 f"{C - W + i} over tokens 0..{C - W + i} differs from the model's own attention "
                                 f"output by rel-L2 {err.max():.3g} (> {tol:g}) at head {h}: query capture does not "
                                 "match this model", 1)
                        write_dataset(lg, "obs_queries", oa, a.dtype)
        os.replace(tmp, a.out)
    finally:
        cap.close()
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"record_kv: wrote {a.out}: {name}, {len(seqs)} sequence(s) x {len(layers)} layer(s), C={C}, Q={Q}, W={W}, "
          f"{a.dtype}; ref_out self-check max rel-L2 {worst:.3g} (tolerance {tol:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
