/// h1b CPU implementation. Layout per KV head, token-major:
///   k_sketch [kv_head][C][bits/8]   sign bits of R k
///   k_norms  [kv_head][C]           fp16 ‖k‖ (angle variant; empty for temp)
///   values   see SketchLayer (uniform.h rows; no fp16 window)
/// Logits: the query's sketch (bits/8 bytes), then per block of tokens the Hamming distances (XOR + popcount
/// on 64-bit words; AVX-512 VPOPCNTQ where the CPU has it, sketch_cpu.h), then a table lookup:
///   angle: ŝ = (softmax_scale·‖q‖)·‖k‖·cos(π·h/b),  temp: ŝ = (1 − 2h/b)/T.
#include <algorithm>
#include <cmath>
#include <vector>

#include "codecs/sketch/h1b_codec.h"
#include "codecs/sketch/sketch_cpu.h"
#include "codecs/sketch/sketch_layer.h"
#include "codecs/sketch/sketch_math.h"
#include "kvb/core/half.h"

namespace kvb::codecs {
namespace {

class H1bLayer final : public SketchLayer {
 public:
  H1bLayer(const H1bParams& p, double T, std::shared_ptr<const sk::Projection> P, const LayerKV& kv,
           const CodecContext& ctx)
      : SketchLayer(kv, ctx.attn, kernels::uq::RowFormat{kv.head_dim, p.value_bits, p.group(kv.head_dim)}, kv.tokens), p_(p),
        T_(T), nb_(p.bits / 8), P_(std::move(P)),
        k_sk_(static_cast<size_t>(kv_heads_ * C_ * nb_)), k_norms_(p.angle() ? static_cast<size_t>(kv_heads_ * C_) : 0),
        tab_(static_cast<size_t>(p.bits + 1)) {
    for (int h = 0; h <= p.bits; ++h)
      tab_[h] = static_cast<float>(p.angle() ? std::cos(sk::kPi * h / p.bits) : (1.0 - 2.0 * h / p.bits) / T_);
    // Threads over blocks of kSketchBlock tokens of one KV head, once there is enough work to pay for waking them.
    const int64_t per_head = (C_ + sk::kSketchBlock - 1) / sk::kSketchBlock, jobs = kv_heads_ * per_head;
    const double work = static_cast<double>(kv_heads_) * C_ * p.bits * d_;
#pragma omp parallel for schedule(dynamic, 4) if (jobs > 1 && work > 4e6)
    for (int64_t job = 0; job < jobs; ++job) {
      const int g = static_cast<int>(job / per_head);
      const int64_t t0 = (job % per_head) * sk::kSketchBlock;
      const int T = static_cast<int>(std::min<int64_t>(sk::kSketchBlock, C_ - t0));
      const float* k = kv.k_head(g) + t0 * d_;
      double nn[sk::kSketchBlock];
      for (int t = 0; t < T; ++t) {
        nn[t] = std::sqrt(sk::norm2_f64(k + static_cast<int64_t>(t) * d_, d_, nullptr, 0));
        if (p_.angle()) k_norms_[g * C_ + t0 + t] = kernels::f32_to_f16_sat(static_cast<float>(nn[t]));
      }
      sk::sign_sketch_block(*P_, p_.bits, k, d_, T, nn, k_sk_.data() + (g * C_ + t0) * nb_, nb_);
    }
  }

  Storage storage() const override {
    StorageList st(kv_heads_, p_.bytes_per_token(d_));
    st.add("k.sketch", StorageKind::kCompressed, bytes_of(k_sk_), C_)
        .add("k.norms", StorageKind::kCompressed, bytes_of(k_norms_), C_);
    add_value_storage(st);
    st.add("k.projection_seed", StorageKind::kFixed, sizeof(uint64_t), 0);
    if (!p_.angle()) st.add("temperature", StorageKind::kFixed, sizeof(float), 0);
    return st.get();
  }

  std::vector<NamedBuffer> buffers() const override {
    std::vector<NamedBuffer> out{named_buffer("k.sketch", k_sk_), named_buffer("k.norms", k_norms_)};
    add_value_buffers(out);
    return out;
  }

 protected:
  void logits(int g, const float* q, float* s, Scratch& scratch) const override {
    constexpr int kBlock = 256;
    static_assert(sizeof(float) == sizeof(int32_t));
    float* buf = scratch.floats2(static_cast<size_t>(kBlock + nb_ / 4 + 4));
    auto* h = reinterpret_cast<int32_t*>(buf);                // [kBlock] Hamming distances
    auto* qs = reinterpret_cast<uint8_t*>(buf + kBlock);      // [nb] the query's sketch
    double qn = 0;
    for (int j = 0; j < d_; ++j) qn += static_cast<double>(q[j]) * q[j];
    qn = std::sqrt(qn);
    sk::sign_sketch(*P_, p_.bits, q, qn, qs);
    const float coef = static_cast<float>(attn_.softmax_scale * qn);
    const uint8_t* rows = k_sk_.data() + static_cast<size_t>(g) * C_ * nb_;
    const uint16_t* nrm = p_.angle() ? k_norms_.data() + static_cast<size_t>(g) * C_ : nullptr;
    for (int64_t t0 = 0; t0 < C_; t0 += kBlock) {
      const int n = static_cast<int>(std::min<int64_t>(kBlock, C_ - t0));
      // scores from bits: no dense key reconstruction (XOR + popcount of the two sketches)
      sk::hamming_many(qs, rows + t0 * nb_, nb_, n, h);
      if (nrm) {
        for (int t = 0; t < n; ++t) s[t0 + t] = coef * f16_to_f32(nrm[t0 + t]) * tab_[h[t]];
      } else {
        for (int t = 0; t < n; ++t) s[t0 + t] = tab_[h[t]];
      }
    }
  }

 private:
  H1bParams p_;
  double T_;
  int nb_;
  std::shared_ptr<const sk::Projection> P_;  // the codec's, shared by its layers
  std::vector<uint8_t> k_sk_;
  std::vector<uint16_t> k_norms_;
  std::vector<float> tab_;  // [bits + 1]: cos(π h/b) (angle) or (1 − 2h/b)/T (temp)
};

}  // namespace

std::unique_ptr<EncodedLayer> h1b_encode_cpu(const H1bParams& p, double T, std::shared_ptr<const sk::Projection> P,
                                             const LayerKV& kv, const CodecContext& ctx) {
  return std::make_unique<H1bLayer>(p, T, std::move(P), kv, ctx);
}

}  // namespace kvb::codecs
