#include "codecs/common/ref_dense.h"

#include <algorithm>
#include <cmath>

#include "kvb/attention/exact.h"

namespace kvb::codecs::ref {

float round_f16_sat(float x) {
  const double a = std::fabs(static_cast<double>(x));
  if (std::isnan(a)) return x;
  if (a >= 65504.0) return std::copysign(65504.0f, x);
  int e = 0;
  std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1): a in [2^(e-1), 2^e)
  // binary16 keeps 11 significant bits for normals (a >= 2^-14) and a fixed quantum 2^-24 below.
  const double quantum = a < 0x1p-14 ? 0x1p-24 : std::ldexp(1.0, e - 11);
  const double r = std::nearbyint(a / quantum) * quantum;  // ties to even (default rounding mode)
  return static_cast<float>(std::copysign(std::min(r, 65504.0), static_cast<double>(x)));
}

void minmax_qdq(const float* x, int64_t n, int64_t stride, int bits, float* out) {
  float mn = x[0], mx = x[0];
  for (int64_t i = 1; i < n; ++i) {
    mn = std::min(mn, x[i * stride]);
    mx = std::max(mx, x[i * stride]);
  }
  const float levels = static_cast<float>((1 << bits) - 1);
  const float scale = round_f16_sat((mx - mn) / levels);
  const float lo = round_f16_sat(mn);
  for (int64_t i = 0; i < n; ++i) {
    double code = 0;
    if (scale > 0) {
      const float y = std::floor((x[i * stride] - lo) / scale + 0.5f);
      code = std::clamp(static_cast<double>(y), 0.0, static_cast<double>(levels));
    }
    out[i * stride] = static_cast<float>(code * scale + lo);
  }
}

DenseLayer::DenseLayer(const LayerKV& kv, std::vector<float> k, std::vector<float> v, AttnConfig attn, Storage st)
    : H_(kv.kv_heads), C_(kv.tokens), d_(kv.head_dim), k_(std::move(k)), v_(std::move(v)), attn_(attn),
      st_(std::move(st)) {}

bool DenseLayer::scores(int g, const float* q, float* s_out, Scratch&) const {
  std::vector<double> s(static_cast<size_t>(C_));
  run(g, q, s.data(), nullptr);
  for (int64_t t = 0; t < C_; ++t) s_out[t] = static_cast<float>(s[t]);
  return true;
}

void DenseLayer::attend(int g, const float* q, float* o_out, Scratch&) const { attend_f64(g, q, o_out, nullptr); }

void DenseLayer::attend_lse(int g, const float* q, float* o_out, double* lse_out, Scratch&) const {
  attend_f64(g, q, o_out, lse_out);
}

void DenseLayer::attend_f64(int g, const float* q, float* o_out, double* lse_out) const {
  std::vector<double> o(static_cast<size_t>(d_)), s(lse_out ? static_cast<size_t>(C_) : 0);
  run(g, q, lse_out ? s.data() : nullptr, o.data());
  for (int j = 0; j < d_; ++j) o_out[j] = static_cast<float>(o[j]);
  if (!lse_out) return;
  // ln Σ exp(s_t), max-shifted as exact_attention_f64 normalizes, over the same float64 logits.
  double m = -INFINITY, l = 0;
  for (double x : s) m = std::max(m, x);
  for (double x : s) l += std::exp(x - m);
  *lse_out = m + std::log(l);
}

void DenseLayer::run(int g, const float* q, double* s, double* o) const {
  exact_attention_f64(k_head(g), v_head(g), C_, d_, q, attn_.softmax_scale, attn_.softcap, s, nullptr, o);
}

std::unique_ptr<EncodedLayer> dense_layer(const LayerKV& kv, std::vector<float> k_hat, std::vector<float> v_hat,
                                          const CodecContext& ctx, Storage storage) {
  return std::make_unique<DenseLayer>(kv, std::move(k_hat), std::move(v_hat), ctx.attn, std::move(storage));
}

}  // namespace kvb::codecs::ref
