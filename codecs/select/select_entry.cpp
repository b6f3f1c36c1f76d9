/// Registry entries of the token-selection codecs `balancekv` and `uniform` (select_codec.h).
#include <cmath>

#include <fmt/format.h>

#include "codecs/common/baseline.h"
#include "codecs/select/select_codec.h"
#include "kvb/core/error.h"

namespace kvb::codecs {

void SelectParams::check(int head_dim) const {
  (void)head_dim;  // every head_dim works: the walk and the fp16 rows have no alignment needs
  KVB_CHECK(levels >= 1 && levels <= 16, Unsupported, "{}: levels {} outside [1, 16]", label(), levels);
}

std::string SelectParams::label() const {
  const std::string est = consistent ? "" : "-repo";
  if (walk == SelectWalk::kUniform) return fmt::format("uniform-T{}-s{}w{}{}", levels, sink, window, est);
  return fmt::format("balancekv-T{}-B{}-g{:g}-t{:g}-s{}w{}{}", levels, block_size, gamma, temp, sink, window, est);
}

namespace {

/// A Codec over select_encode_{cpu,ref}: validates the cache, passes the layer index (the walk's random
/// stream is keyed by it), and reports the walk's speed and the estimator that ran.
class SelectCodec final : public Codec {
 public:
  SelectCodec(SelectParams p, SelectEncodeFn fn, std::string impl) : p_(p), fn_(fn), impl_(std::move(impl)) {}
  std::unique_ptr<EncodedLayer> encode(int layer, const LayerKV& kv, const EncodedLayer*,
                                       const CodecContext& ctx) const override {
    check_layer(kv, p_.label());
    p_.check(kv.head_dim);
    return fn_(p_, layer, kv, ctx, &stats_);
  }
  Json report() const override {
    Json j{{"label", p_.label()},
           {"implementation", impl_},
           {"walk", p_.walk == SelectWalk::kBalance ? "self-balancing walk" : "uniform random signs"},
           {"estimator", p_.consistent ? "consistent: logit + ln w, values unscaled"
                                       : "repo: logit + T ln 2, values x w/2^T"}};
    const int64_t ns = stats_.ns, tok = stats_.tokens;
    if (ns > 0 && tok > 0) {
      j["walk_tokens"] = tok;
      j["walk_seconds"] = ns * 1e-9;
      j["walk_tokens_per_s"] = static_cast<double>(tok) / (ns * 1e-9);
    }
    return j;
  }

 private:
  SelectParams p_;
  SelectEncodeFn fn_;
  std::string impl_;
  mutable WalkStats stats_;
};

using Bindings = std::vector<ParamBinding<SelectParams>>;

/// The parameters of both walks.
Bindings common_params() {
  return {
      bind(ParamSpec::Int("levels", 2, 1, 16, "T: halvings; keeps 2^-T of the middle tokens (b_eff = 16·2^-T)"),
           &SelectParams::levels),
      bind(ParamSpec::Int("sink", 32, 0, 1 << 20, "first tokens kept verbatim in fp16"), &SelectParams::sink),
      bind(ParamSpec::Int("window", 32, 0, 1 << 20, "last tokens kept verbatim in fp16"), &SelectParams::window),
      bind_choice(ParamSpec::Choice("estimator", "consistent", {"consistent", "repo"},
                                    "consistent: logit + ln w, values unscaled (Num and Den weighted alike); repo: "
                                    "logit + T ln 2 and values x w/2^T, as the authors' decode branch"),
                  &SelectParams::consistent, {{"consistent", true}, {"repo", false}}),
  };
}

/// Everything but the name, summary, paper, presets and notes; `own` are the walk's own parameters.
void fill_common(CodecEntry& e, SelectWalk walk, const Bindings& own) {
  const std::string name = e.info.name;
  Bindings all = common_params();
  all.insert(all.end(), own.begin(), own.end());
  const ParamTable<SelectParams> table(std::move(all));
  SelectParams base;
  base.walk = walk;
  e.info.params = table.specs();
  e.info.family = "token_selection";
  e.info.selects_tokens = true;
  e.info.budget_rule =
      "b_eff = 16·2^-T (the kept tokens' fp16 K and V per middle token; weights cost nothing per token because "
      "kept rows are grouped by weight class, T+1 counts per KV head reported as fixed bytes; sink and window "
      "reported as buffer bytes); candidates T = 1..8 (8, 4, 2, 1, ... bits): no integer T fits 3 bits.";
  e.candidates = [](int) {
    std::vector<Candidate> out;
    for (int T : {2, 1, 3, 4, 5, 6, 7, 8}) out.push_back({Json{{"levels", T}}, 16.0 / std::ldexp(1.0, T)});
    return out;
  };
  const auto factory = [&](SelectEncodeFn fn, std::string impl) {
    return codec_factory(
        table, name,
        [fn, impl = std::move(impl)](SelectParams p) { return std::make_unique<SelectCodec>(p, fn, impl); }, base);
  };
  e.label = codec_label(table, name, base);
  e.make_cpu = factory(select_encode_cpu, "cpu");
  e.make_ref = factory(select_encode_ref, "ref");
#ifdef KVB_WITH_CUDA
  e.make_cuda = factory(select_encode_cuda, "cuda");
#endif
}

}  // namespace

CodecEntry balancekv_entry() {
  CodecEntry e;
  e.info.name = "balancekv";
  e.info.summary =
      "BalanceKV: keeps 2^-T of the middle tokens, chosen by T self-balancing walks in the softmax kernel's "
      "feature space, with power-of-two weights; fp16 sink and window";
  e.info.paper = "BalanceKV, arXiv 2502.07861";
  e.info.presets = {
      {"paper", Json{{"levels", 2}, {"gamma", 4.0}, {"temp", 1.0}, {"beta", 0.0}, {"block_size", 128},
                     {"sink", 32}, {"window", 32}, {"const_denom", 0.025}}},
      {"ablation", Json{{"levels", 2}, {"gamma", 4.0}, {"temp", 0.1}, {"block_size", 256}, {"sink", 256},
                        {"window", 256}}},
  };
  e.info.notes =
      "paper preset = the authors' LongBench run (T=2, γ=4, τ=1, B=128, sink=window=32, c=0.025); ablation = "
      "their single-layer notebook (B=256, τ=0.1, sink=window=256). Walk in float64 with max-shifted running "
      "sums (no overflow for keys of any norm); counter-based randomness keyed by (seed, layer, head, level, "
      "block, step). Compresses the prefill once (no streaming merge). Helps on real data, where tokens are "
      "redundant; on synthetic i.i.d. tokens expect little or no gain over uniform.";
  fill_common(e, SelectWalk::kBalance,
              {bind(ParamSpec::Float("gamma", 4.0, 1e-12, 1e12, "γ: walk step (p_i = 0.5 − γ·Σ_j G_ij σ_j)"),
                    &SelectParams::gamma),
               bind(ParamSpec::Float("temp", 1.0, 0.0, 1e6, "τ: kernel temperature, exp(τ<k̄_i,k̄_j>/√d − β)"),
                    &SelectParams::temp),
               bind(ParamSpec::Float("beta", 0.0, -1e6, 1e6, "β: kernel offset"), &SelectParams::beta),
               bind(ParamSpec::Int("block_size", 128, 1, 4096, "B: tokens per independent walk (O(B²·d) per block)"),
                    &SelectParams::block_size),
               bind(ParamSpec::Float("const_denom", 0.025, -1e6, 1e6, "c: constant of the value kernel <v_i,v_j> + c"),
                    &SelectParams::const_denom)});
  return e;
}

CodecEntry uniform_entry() {
  CodecEntry e;
  e.info.name = "uniform";
  e.info.summary =
      "Uniform sampling: BalanceKV's halving with fair random signs instead of the walk (the paper's baseline)";
  e.info.paper = "baseline (BalanceKV, arXiv 2502.07861)";
  e.info.presets = {{"paper", Json{{"levels", 2}, {"sink", 32}, {"window", 32}}}};
  e.info.notes =
      "same cut point, weights and estimators as balancekv, so the two differ only in how the signs are drawn "
      "(every sign a fair coin keyed by (seed, layer, head, level, position))";
  fill_common(e, SelectWalk::kUniform, {});
  return e;
}

}  // namespace kvb::codecs
