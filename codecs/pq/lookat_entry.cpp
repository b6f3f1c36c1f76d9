/// lookat registry entry and its trainable Codec: per-layer codebooks from fit(), the calibration/evaluation
/// overlap check, and the trained state (LookatTrained) the ref, CPU and CUDA encoders take.
#include <algorithm>
#include <map>
#include <numeric>

#include "codecs/common/baseline.h"
#include "codecs/pq/lookat_codec.h"
#include "kvb/core/hash.h"
#include "kvb/core/rng.h"

namespace kvb::codecs {

const ParamTable<LookatParams>& LookatParams::table() {
  using P = LookatParams;
  static const ParamTable<P> t({
      bind(ParamSpec::Int("subspaces", 4, 1, 4096, "m: key subspaces of head_dim/m channels, one uint8 code each"),
           &P::subspaces),
      bind(ParamSpec::Int("nbits", 8, 1, 8, "log2 of the centroids per subspace (K = 2^nbits; codes take a byte)"),
           &P::nbits),
      bind(ParamSpec::Choice("values", "fp16", {"fp16", "int8", "int4"},
                             "value storage: fp16 (the paper) or per-token asymmetric int8/int4 (harness extension)"),
           &P::values),
      bind(ParamSpec::Int("value_group", 32, 1, 4096, "channels per fp16 (scale, min) of int values; divides head_dim"),
           &P::value_group),
      bind(ParamSpec::Int("iters", 25, 0, 1000, "Lloyd iterations after k-means++ seeding"), &P::iters),
      bind(ParamSpec::Int("train_points", 16384, 1, 1 << 24,
                          "calibration keys sampled per (layer, KV head) for k-means (all when fewer)"),
           &P::train_points),
  });
  return t;
}

void LookatParams::check(int head_dim) const {
  KVB_CHECK(subspaces <= head_dim && head_dim % subspaces == 0, Unsupported,
            "lookat: subspaces m={} does not divide head_dim {} (each subspace holds head_dim/m channels)", subspaces,
            head_dim);
  if (int_values())
    KVB_CHECK(head_dim % value_group == 0, Unsupported,
              "lookat: value_group {} does not divide head_dim {} (values {} are quantized in groups of channels)",
              value_group, head_dim, values);
}

std::string LookatParams::label() const {
  std::string s = fmt::format("lookat-m{}", subspaces);
  if (nbits != 8) s += fmt::format("-k{}", centroids());
  if (int_values()) s += fmt::format("+v{}-g{}", values, value_group);
  return s;
}

double LookatParams::bytes_per_token(int head_dim) const {
  if (!int_values()) return subspaces + 2.0 * head_dim;
  return subspaces + static_cast<double>((static_cast<int64_t>(head_dim) * value_bits() + 7) / 8) +
         4.0 * (head_dim / value_group);
}

bool LookatParams::trains_like(const LookatParams& o) const {
  LookatParams a = *this;
  a.values = o.values;
  a.value_group = o.value_group;
  return a == o;
}

namespace {

/// Per-token fingerprints of a cache: a hash of the token's key rows over all KV heads.
std::vector<uint64_t> token_hashes(const LayerKV& kv) {
  std::vector<uint64_t> h(static_cast<size_t>(kv.tokens));
  for (int64_t t = 0; t < kv.tokens; ++t) {
    uint64_t x = kFnvOffset;
    for (int g = 0; g < kv.kv_heads; ++g) x = mix64(fnv1a_floats(kv.k_head(g) + t * kv.head_dim, kv.head_dim, x));
    h[t] = x;
  }
  return h;
}

/// One layer's trained state: the codebooks every encoder (ref, CPU, CUDA) takes, and the fingerprints of
/// the calibration tokens for the overlap check.
struct LookatTrained final : TrainedLayer {
  LookatParams fitted_with;
  LookatCodebooks cb;
  std::vector<uint64_t> seen;  // token fingerprints of the calibration caches, sorted (8 bytes per token)
};

class LookatCodec final : public Codec {
 public:
  using EncodeFn = std::unique_ptr<EncodedLayer> (*)(const LookatParams&, const LookatCodebooks&, const LayerKV&,
                                                     const CodecContext&);
  LookatCodec(LookatParams p, EncodeFn fn, std::string impl) : p_(std::move(p)), fn_(fn), impl_(std::move(impl)) {}

  void fit(int layer, const std::vector<const LayerKV*>& calib, const CodecContext& ctx) override {
    KVB_CHECK(!calib.empty(), DataError, "{}: fit of layer {} got no calibration caches", p_.label(), layer);
    const LayerKV& f = *calib.front();
    auto fitted = std::make_shared<LookatTrained>();
    fitted->fitted_with = p_;
    for (const LayerKV* kv : calib) {
      check_layer(*kv, p_.label());
      KVB_CHECK(kv->kv_heads == f.kv_heads && kv->head_dim == f.head_dim, DataError,
                "{}: calibration caches of layer {} disagree in shape ([{}, *, {}] vs [{}, *, {}])", p_.label(), layer,
                f.kv_heads, f.head_dim, kv->kv_heads, kv->head_dim);
      const auto th = token_hashes(*kv);
      fitted->seen.insert(fitted->seen.end(), th.begin(), th.end());
    }
    std::sort(fitted->seen.begin(), fitted->seen.end());
    p_.check(f.head_dim);
    fitted->cb = pq::train(p_, calib, layer, ctx.seed);
    layers_[layer] = std::move(fitted);
  }

  std::shared_ptr<const TrainedLayer> trained(int layer) const override {
    const auto it = layers_.find(layer);
    return it == layers_.end() ? nullptr : it->second;
  }
  void adopt(int layer, std::shared_ptr<const TrainedLayer> state) override {
    layers_[layer] = adopted_state<LookatTrained>(std::move(state), p_, layer);
  }

  std::unique_ptr<EncodedLayer> encode(int layer, const LayerKV& kv, const EncodedLayer* prev,
                                       const CodecContext& ctx) const override {
    (void)prev;
    check_layer(kv, p_.label());
    p_.check(kv.head_dim);
    const auto it = layers_.find(layer);
    KVB_CHECK(it != layers_.end(), UsageError,
              "{}: layer {} was not fitted (lookat trains its codebooks on calibration caches first: fit(layer, ...))",
              p_.label(), layer);
    const LookatCodebooks& cb = it->second->cb;
    KVB_CHECK(cb.kv_heads == kv.kv_heads && cb.dsub * cb.m == kv.head_dim, DataError,
              "{}: layer {} was fitted on [{} KV heads, head_dim {}] but the cache is [{}, {}]", p_.label(), layer,
              cb.kv_heads, cb.dsub * cb.m, kv.kv_heads, kv.head_dim);
    // Calibration never sees the evaluated data (docs/codecs.md §1.4): refuse a cache most
    // of whose tokens' keys occur verbatim in the calibration caches (a shared first token, e.g. BOS at
    // position 0, is not an overlap).
    int64_t found = 0;
    const auto& seen = it->second->seen;
    for (uint64_t h : token_hashes(kv)) found += std::binary_search(seen.begin(), seen.end(), h) ? 1 : 0;
    // Unsupported: the runner records this cell as skipped with the reason; the other cells still run.
    KVB_CHECK(!(found >= 2 && 2 * found > kv.tokens), Unsupported,
              "{}: layer {}: {} of the {} evaluated tokens were in the calibration data (calibration and evaluation "
              "must not overlap; give the dataset at least two sequences so one calibrates)",
              p_.label(), layer, found, kv.tokens);
    return fn_(p_, cb, kv, ctx);
  }

  Json report() const override {
    Json j{{"label", p_.label()}, {"implementation", impl_}};
    Json layers = Json::object();
    for (const auto& [l, f] : layers_)
      layers[std::to_string(l)] = Json{{"train_mse_per_key", f->cb.train_mse},
                                       {"train_points_per_head", f->cb.train_points},
                                       {"codebook_bytes_per_head", 2.0 * f->cb.m * f->cb.K * f->cb.dsub}};
    j["fit"] = layers;
    return j;
  }

 private:
  LookatParams p_;
  EncodeFn fn_;
  std::string impl_;
  std::map<int, std::shared_ptr<const LookatTrained>> layers_;
};

CodecFactory lookat_factory(LookatCodec::EncodeFn fn, std::string impl) {
  return codec_factory(LookatParams::table(), "lookat", [fn, impl = std::move(impl)](LookatParams p) {
    return std::make_unique<LookatCodec>(std::move(p), fn, impl);
  });
}

}  // namespace

CodecEntry lookat_entry() {
  CodecEntry e;
  e.info.name = "lookat";
  e.info.family = "product_quantization";
  e.info.summary =
      "LOOKAT: keys product-quantized (m uint8 codes from k-means codebooks), scored by lookup-table sums; "
      "values fp16 (paper) or INT8/INT4 (extension)";
  e.info.paper = "LOOKAT, arXiv 2601.10155";
  e.info.budget_rule =
      "b_eff = (8·m + value bits per token) / (2·head_dim), codebooks (K·head_dim fp16 per layer and KV head) "
      "reported as fixed bytes; candidates m in {head_dim/32, /16, /8} (dividing head_dim, at least 1) "
      "with values fp16 (the paper), int8 or int4 (groups of gcd(head_dim, 32) channels, the extension).";
  e.info.params = LookatParams::table().specs();
  e.info.presets = {
      {"paper-2", Json{{"subspaces", 2}, {"values", "fp16"}}},
      {"paper-4", Json{{"subspaces", 4}, {"values", "fp16"}}},
  };
  e.info.trainable = true;
  e.info.notes =
      "codebooks per (layer, KV head), trained on calibration sequences only (encode refuses data that was "
      "calibrated on); k-means++ then 25 Lloyd iterations in fp32 on up to train_points keys, stored as fp16; "
      "attend never rebuilds keys; int values are a labelled extension (docs/codecs.md §9.5)";
  e.candidates = [](int head_dim) {
    std::vector<int> ms;
    for (int div : {32, 16, 8}) {
      const int m = std::max(1, head_dim / div);
      if (head_dim % m == 0 && std::find(ms.begin(), ms.end(), m) == ms.end()) ms.push_back(m);
    }
    const int G = head_dim % 32 == 0 ? 32 : std::gcd(head_dim, 32);
    std::vector<Candidate> out;
    for (const char* v : {"fp16", "int8", "int4"})
      for (int m : ms) {
        LookatParams p;
        p.subspaces = m;
        p.values = v;
        p.value_group = G;
        out.push_back({Json{{"subspaces", m}, {"values", v}, {"value_group", G}},
                       8.0 * p.bytes_per_token(head_dim) / (2.0 * head_dim)});
      }
    return out;
  };
  e.label = codec_label(LookatParams::table(), "lookat");
  e.make_cpu = lookat_factory(lookat_encode_cpu, "cpu");
  e.make_ref = lookat_factory(lookat_encode_ref, "ref");
#ifdef KVB_WITH_CUDA
  e.make_cuda = lookat_factory(lookat_encode_cuda, "cuda");
#endif
  return e;
}

}  // namespace kvb::codecs
