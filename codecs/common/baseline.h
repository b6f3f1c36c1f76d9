#pragma once
/// Glue shared by the baseline codecs (fp16, fp8, int, kivi) and their references: boundary checks,
/// the per-KV-head encode loop, storage bookkeeping, and the scores -> softmax -> weighted-sum driver.
/// Each codec supplies only what differs: how it encodes one KV head, how it dots a query with its keys
/// and how it sums weighted values, always straight from its compressed buffers.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/cpu/attend_rows.h"
#include "kernels/cpu/row_kernels.h"
#include "kvb/core/codec.h"
#include "kvb/core/error.h"
#include "kvb/core/registry.h"

namespace kvb::codecs {

/// A state given to Codec::adopt as the codec's own type S, whose `fitted_with` (the parameters that trained
/// it) must train the same model as `p` (P::trains_like). Throws UsageError otherwise.
template <class S, class P>
std::shared_ptr<const S> adopted_state(std::shared_ptr<const TrainedLayer> state, const P& p, int layer) {
  auto s = std::dynamic_pointer_cast<const S>(std::move(state));
  KVB_CHECK(s != nullptr, UsageError, "{}: adopt of layer {}: not a trained state of this codec", p.label(), layer);
  KVB_CHECK(s->fitted_with.trains_like(p), UsageError,
            "{}: adopt of layer {}: the state was trained with other parameters ({})", p.label(), layer,
            s->fitted_with.label());
  return s;
}

/// Throws DataError unless `kv` is a non-empty [kv_heads, tokens, head_dim] cache whose k and v hold
/// exactly that many floats. `codec` names the codec in the message.
void check_layer(const LayerKV& kv, const std::string& codec);

/// Runs f(g) for every KV head g, in parallel (OpenMP) when there is more than one head. f must not throw
/// (validate before calling): an exception cannot leave an OpenMP region.
template <class F>
void for_each_head(int kv_heads, F&& f) {
#pragma omp parallel for schedule(static) if (kv_heads > 1)
  for (int g = 0; g < kv_heads; ++g) f(g);
}

/// Size in bytes of a buffer.
template <class T>
uint64_t bytes_of(const std::vector<T>& v) {
  return static_cast<uint64_t>(v.size()) * sizeof(T);
}

/// A buffer's bytes under its storage name (EncodedLayer::buffers()).
template <class T>
NamedBuffer named_buffer(std::string name, const std::vector<T>& v) {
  const auto* p = reinterpret_cast<const uint8_t*>(v.data());
  return NamedBuffer{std::move(name), std::vector<uint8_t>(p, p + bytes_of(v))};
}

/// Per-thread float work buffer `which` (0 or 1) of at least n floats, kept and grown across calls (attend
/// may run on several threads at once; no allocation once warm): the rotated-domain layers' transformed
/// queries (0) and output accumulators (1). A layer must not hold one across a call into another layer that
/// uses them (the rotation wrapper's inner layers, the baselines, use Scratch instead).
float* thread_floats(int which, size_t n);

/// Raw dot products s[0, n) -> logits in place: s = softcap(softmax_scale·(factor·s)) (attn_math.h softcap_f).
void to_logits(float* s, int64_t n, const AttnConfig& attn, float factor = 1.f);

/// The GQA-group attention driver of every CPU layer: nq queries against `rows` stored rows of one KV head,
/// in chunks of kManyQueries. Per chunk, logits(qc, nc, s) fills s[i·rows + t] with query i's logit of row t
/// (it may use scratch.floats2(), never scratch.floats(), which holds s); per query softmax_weights, then
/// weights(w[rows]) may rescale each row's weight in the value sum; then the value rows are decoded
/// kDecodeRows at a time (decode_values(t0, n, out[n·d], tmp[tmp_floats])) and added into all the chunk's
/// outputs at once (kernels::row_kernels axpy_many), so every stored value row is read and unpacked once per chunk.
/// Output: Σ w_t·v̂_t · out_factor / Σ exp(s_t − max).
template <class Logits, class DecodeV, class Weights>
void attend_many_rows(int64_t rows, int d, size_t tmp_floats, const float* const* qs, int nq, float* const* outs,
                      Scratch& scratch, Logits&& logits, DecodeV&& decode_values, Weights&& weights,
                      float out_factor);

/// The logits phase of layers that store key rows (attend_many_rows' `logits`): rows decoded kDecodeRows at
/// a time (decode_keys(t0, n, out[n·d], tmp[tmp_floats])) and dotted with all nc queries at once
/// (kernels::row_kernels dots_many): s[i·rows + t] = <qc[i], k̂_t> (raw dots; the caller turns them into logits).
template <class DecodeK>
void decoded_row_dots(int64_t rows, int d, size_t tmp_floats, const float* const* qc, int nc, float* s,
                      Scratch& scratch, DecodeK&& decode_keys);

/// The fused attention of nq queries over stored rows K, V of one KV head (kernels/cpu/attend_rows.h: fp16, fp8 or
/// per-token uniform codes decoded in registers; logits softmax_scale·key_factor·<q, k̂>, outputs times out_factor):
/// false when it cannot run this call (softcap set, no SIMD path for the codec and shape, overflowing logits), and
/// the caller runs its unfused path. Used by the int, fp8 and kivi codecs' attend_many (and through the next
/// function); state / finish chain calls over consecutive row ranges stored differently (RowAttend::state).
bool attend_many_coded_fused(const kernels::StoredRows& K, const kernels::StoredRows& V, int64_t rows, int d,
                             const AttnConfig& attn, const float* const* qs, int nq, float* const* outs,
                             Scratch& scratch, float key_factor = 1.f, float out_factor = 1.f,
                             const kernels::RowSegment* segs = nullptr, int nsegs = 0,
                             kernels::RowAttendState* state = nullptr, bool finish = true);

/// The fused exact attention of nq queries over fp16 rows K, V [rows][d] (kernels/cpu/attend_rows.h; logits
/// softmax_scale·<q, k>): false when it cannot run this call (softcap set, no SIMD path, head_dim, overflowing
/// logits), and the caller runs its unfused path. Used by the fp16 codec, the eviction codecs and (with segments:
/// per-run logit biases and value factors) the selection codecs' attend_many.
bool attend_many_f16_fused(const uint16_t* K, const uint16_t* V, int64_t rows, int d, const AttnConfig& attn,
                           const float* const* qs, int nq, float* const* outs, Scratch& scratch,
                           const kernels::RowSegment* segs = nullptr, int nsegs = 0);

/// attend_many of the row-keeping codecs (token selection, token eviction): nq queries against `rows` stored
/// fp16 key and value rows K, V [rows][d] (binary16 bits) of one KV head, through attend_many_rows and
/// decoded_row_dots. Per query the logits are softcap(softmax_scale·<q, k̂_r>), then adjust(s) may add
/// per-row terms in place (the selection family's class biases) and weights(w) may rescale each row's softmax
/// weight in the value sum.
template <class Adjust, class Weights>
void attend_many_f16_rows(const uint16_t* K, const uint16_t* V, int64_t rows, int d, const AttnConfig& attn,
                          const float* const* qs, int nq, float* const* outs, Scratch& scratch, Adjust&& adjust,
                          Weights&& weights);

/// Builds a Storage from the buffers a layer actually holds.
class StorageList {
 public:
  StorageList(int kv_heads, double nominal_bytes_per_token) {
    s_.kv_heads = kv_heads;
    s_.nominal_bytes_per_token = nominal_bytes_per_token;
  }
  StorageList& add(std::string name, StorageKind kind, uint64_t bytes, int64_t tokens) {
    s_.items.push_back(StorageItem{std::move(name), kind, bytes, tokens});
    return *this;
  }
  Storage get() const { return s_; }

 private:
  Storage s_;
};

/// An encoded layer whose logits are softmax_scale·<q, k̂_t> (then softcap) over all C tokens, and whose
/// output is Σ softmax(ŝ)_t v̂_t. attend() runs two passes: logits into scratch.floats(C), then one
/// weighted pass over the values. Two passes beat an online softmax here because ŝ must be produced
/// anyway (scores()), and the value pass then needs no rescaling of the accumulator.
class BaselineLayer : public EncodedLayer {
 public:
  BaselineLayer(int kv_heads, int64_t tokens, int head_dim, AttnConfig attn)
      : kv_heads_(kv_heads), C_(tokens), d_(head_dim), attn_(attn) {}

  int64_t tokens() const final { return C_; }
  bool scores(int g, const float* q, float* s_out, Scratch& scratch) const final;
  void attend(int g, const float* q, float* o_out, Scratch& scratch) const final {
    attend_one(g, q, o_out, nullptr, scratch);
  }
  /// attend() and the log of its softmax normalizer from the same pass (softmax_weights), not scores() again.
  void attend_lse(int g, const float* q, float* o_out, double* lse_out, Scratch& scratch) const final {
    attend_one(g, q, o_out, lse_out, scratch);
  }
  /// GQA groups: each block of kDecodeRows key rows is decoded once (decode_keys) and dotted with all the
  /// queries (kernels::row_kernels dots_many), then per query the same softmax as attend(), then each block of value
  /// rows is decoded once (decode_values) and added into every query's output (axpy_many). Queries go in
  /// chunks of kManyQueries (logits [chunk][C] in scratch.floats()). Equals attend() per query up to float
  /// rounding: reassociated sums, and the decoded row is one float rounding of the stored value where
  /// attend() folds scales into its sums instead (see tests/codecs/attend_many_test.cpp).
  void attend_many(int g, const float* const* qs, int nq, float* const* outs, Scratch& scratch) const final;

  static constexpr int kDecodeRows = 16;   ///< rows decoded per block by attend_many
  static constexpr int kManyQueries = 8;  ///< queries attend_many handles per pass

 protected:
  /// dots[t] = <q, k̂_t> for t in [0, C), computed from the compressed keys of KV head g.
  /// May use scratch.floats2(), never scratch.floats() (attend keeps the logits there).
  virtual void key_dots(int g, const float* q, float* dots, Scratch& scratch) const = 0;
  /// out[0, d) = Σ_t w[t]·v̂_t over KV head g (out is overwritten). w points into scratch.floats();
  /// may use scratch.floats2().
  virtual void weighted_values(int g, const float* w, float* out, Scratch& scratch) const = 0;
  /// For attend_many: out[r·d + j] = x̂_{t0 + r, j}, r < n <= kDecodeRows, the stored keys (values) of KV
  /// head g as floats, divided by key_factor(g) (value_factor(g)), a per-head constant (fp8's scale) that
  /// attend_many applies to the logits (outputs) once. tmp: decode_tmp_floats() floats.
  virtual void decode_keys(int g, int64_t t0, int n, float* out, float* tmp) const = 0;
  virtual void decode_values(int g, int64_t t0, int n, float* out, float* tmp) const = 0;
  virtual float key_factor(int g) const {
    (void)g;
    return 1.f;
  }
  virtual float value_factor(int g) const {
    (void)g;
    return 1.f;
  }
  /// Scratch floats decode_keys / decode_values need.
  virtual size_t decode_tmp_floats() const { return 8 * static_cast<size_t>(d_) + 64; }
  /// A layer's fused GQA kernel, tried first by attend_many (issue 19): returns false when it cannot run this call
  /// (no SIMD path, an unsupported shape or softcap, overflowing logits), and attend_many then runs the decoded-row
  /// path above, which stays the oracle tests hold the fused kernels to.
  virtual bool attend_many_fused(int g, const float* const* qs, int nq, float* const* outs, Scratch& scratch) const {
    (void)g, (void)qs, (void)nq, (void)outs, (void)scratch;
    return false;
  }

  int kv_heads_;
  int64_t C_;
  int d_;
  AttnConfig attn_;

 private:
  /// attend() and attend_lse(): lse_out may be null.
  void attend_one(int g, const float* q, float* o_out, double* lse_out, Scratch& scratch) const;
};

template <class Logits, class DecodeV, class Weights>
void attend_many_rows(int64_t rows, int d, size_t tmp_floats, const float* const* qs, int nq, float* const* outs,
                      Scratch& scratch, Logits&& logits, DecodeV&& decode_values, Weights&& weights,
                      float out_factor) {
  constexpr int kRows = BaselineLayer::kDecodeRows, kMany = BaselineLayer::kManyQueries;
  const kernels::RowKernels& K = kernels::row_kernels_switched();
  for (int q0 = 0; q0 < nq; q0 += kMany) {
    const int nc = nq - q0 < kMany ? nq - q0 : kMany;
    float* const* oc = outs + q0;
    float* s = scratch.floats(static_cast<size_t>(nc) * static_cast<size_t>(rows));  // [nc][rows]
    logits(qs + q0, nc, s);
    double l[kMany];
    for (int i = 0; i < nc; ++i) {
      float* si = s + static_cast<size_t>(i) * rows;
      l[i] = softmax_weights(si, rows);
      weights(si);
      for (int j = 0; j < d; ++j) oc[i][j] = 0.f;
    }
    float* buf = scratch.floats2(static_cast<size_t>(kRows) * d + tmp_floats);
    float* tmp = buf + static_cast<size_t>(kRows) * d;
    for (int64_t t0 = 0; t0 < rows; t0 += kRows) {
      const int n = static_cast<int>(rows - t0 < kRows ? rows - t0 : kRows);
      bool any = false;  // skip blocks whose weights all underflowed to 0 for every query
      for (int i = 0; i < nc && !any; ++i)
        for (int r = 0; r < n; ++r) any |= s[i * rows + t0 + r] != 0.f;
      if (!any) continue;
      decode_values(t0, n, buf, tmp);
      K.axpy_many(buf, n, d, s + t0, rows, nc, oc);
    }
    for (int i = 0; i < nc; ++i) {
      const float inv = static_cast<float>(out_factor / l[i]);
      for (int j = 0; j < d; ++j) oc[i][j] *= inv;
    }
  }
}

template <class DecodeK>
void decoded_row_dots(int64_t rows, int d, size_t tmp_floats, const float* const* qc, int nc, float* s,
                      Scratch& scratch, DecodeK&& decode_keys) {
  constexpr int kRows = BaselineLayer::kDecodeRows;
  const kernels::RowKernels& K = kernels::row_kernels_switched();
  float* buf = scratch.floats2(static_cast<size_t>(kRows) * d + tmp_floats);
  float* tmp = buf + static_cast<size_t>(kRows) * d;
  for (int64_t t0 = 0; t0 < rows; t0 += kRows) {
    const int n = static_cast<int>(rows - t0 < kRows ? rows - t0 : kRows);
    decode_keys(t0, n, buf, tmp);
    K.dots_many(buf, n, d, qc, nc, s + t0, rows);
  }
}

/// A Codec that validates the cache and delegates to `encode_fn(params, kv, ctx)`, or to
/// `encode_fn(params, layer, kv, ctx)` for codecs whose encode depends on the layer (QJL's paper preset uses
/// other sketch sizes in the first layers). P must provide `void check(int head_dim) const` (throws
/// Unsupported) and `std::string label() const`.
template <class P>
class FnCodec final : public Codec {
 public:
  using EncodeFn = std::unique_ptr<EncodedLayer> (*)(const P&, const LayerKV&, const CodecContext&);
  using LayerEncodeFn = std::unique_ptr<EncodedLayer> (*)(const P&, int, const LayerKV&, const CodecContext&);
  FnCodec(P p, EncodeFn fn, std::string impl) : p_(std::move(p)), fn_(fn), impl_(std::move(impl)) {}
  FnCodec(P p, LayerEncodeFn fn, std::string impl) : p_(std::move(p)), layer_fn_(fn), impl_(std::move(impl)) {}

  std::unique_ptr<EncodedLayer> encode(int layer, const LayerKV& kv, const EncodedLayer* prev,
                                       const CodecContext& ctx) const override {
    (void)prev;
    check_layer(kv, p_.label());
    p_.check(kv.head_dim);
    return layer_fn_ ? layer_fn_(p_, layer, kv, ctx) : fn_(p_, kv, ctx);
  }
  Json report() const override { return Json{{"label", p_.label()}, {"implementation", impl_}}; }

 private:
  P p_;
  EncodeFn fn_ = nullptr;
  LayerEncodeFn layer_fn_ = nullptr;
  std::string impl_;
};

/// The factory of every codec entry: `table` resolves the JSON (defaults filled; messages name `name`.params)
/// and builds the parameter struct (from `base`, for fields no parameter sets), which is checked against the
/// model's head_dim when known (P::check throws Unsupported); returns make_codec(std::move(p)), or
/// make_codec(std::move(p), shape) for codecs with further checks against the model's shape.
template <class P, class MakeCodec>
CodecFactory codec_factory(ParamTable<P> table, std::string name, MakeCodec make_codec, P base = P{}) {
  return [table = std::move(table), name = std::move(name), make_codec, base](
             const Json& params, const ModelShape& shape) -> std::unique_ptr<Codec> {
    P p = table.from_json(resolve_params(table.specs(), params, name + ".params"), base);
    if (shape.head_dim > 0) p.check(shape.head_dim);
    if constexpr (std::is_invocable_v<MakeCodec, P, const ModelShape&>)
      return make_codec(std::move(p), shape);
    else
      return make_codec(std::move(p));
  };
}

/// The entry's label function over the same table: resolves (defaults filled), builds the parameters and
/// asks them for their label.
template <class P>
std::function<std::string(const Json&)> codec_label(ParamTable<P> table, std::string name, P base = P{}) {
  return [table = std::move(table), name = std::move(name), base](const Json& params) {
    return table.from_json(resolve_params(table.specs(), params, name + ".params"), base).label();
  };
}

/// codec_factory of a FnCodec over `fn` (either FnCodec encode signature).
template <class P, class Fn>
CodecFactory fn_factory(ParamTable<P> table, std::string name, Fn fn, std::string impl) {
  return codec_factory(std::move(table), std::move(name),
                       [fn, impl = std::move(impl)](P p) { return std::make_unique<FnCodec<P>>(std::move(p), fn, impl); });
}

template <class Adjust, class Weights>
void attend_many_f16_rows(const uint16_t* K, const uint16_t* V, int64_t rows, int d, const AttnConfig& attn,
                          const float* const* qs, int nq, float* const* outs, Scratch& scratch, Adjust&& adjust,
                          Weights&& weights) {
  const kernels::RowKernels& R = kernels::row_kernels_switched();
  attend_many_rows(
      rows, d, 0, qs, nq, outs, scratch,
      [&](const float* const* qc, int nc, float* s) {
        decoded_row_dots(rows, d, 0, qc, nc, s, scratch, [&](int64_t t0, int n, float* out, float*) {
          R.from_f16(K + t0 * d, out, static_cast<int64_t>(n) * d);
        });
        for (int i = 0; i < nc; ++i) {
          to_logits(s + static_cast<size_t>(i) * rows, rows, attn);
          adjust(s + static_cast<size_t>(i) * rows);
        }
      },
      [&](int64_t t0, int n, float* out, float*) { R.from_f16(V + t0 * d, out, static_cast<int64_t>(n) * d); },
      weights, 1.f);
}

}  // namespace kvb::codecs
