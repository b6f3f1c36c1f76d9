/// h1b reference: docs/codecs.md §8.2–§8.3 literally, in float64. Key and query sketches as unpacked ±1 (each
/// projection summed over channels in order in float64, as project_f64), the score from the ±1 dot product
/// σ_q·σ_k = b − 2h (no packing, no popcount), cos / temperature in float64, values dequantized to a dense
/// copy (allowed here). Shares only the projection generator with the CPU path. Storage from the formulas.
#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "codecs/common/ref_dense.h"
#include "codecs/sketch/h1b_codec.h"
#include "codecs/sketch/sketch_cpu.h"
#include "codecs/sketch/sketch_layer.h"
#include "codecs/sketch/sketch_math.h"

namespace kvb::codecs {

std::unique_ptr<EncodedLayer> h1b_encode_ref(const H1bParams& p, double T, std::shared_ptr<const sk::Projection> P,
                                             const LayerKV& kv, const CodecContext& ctx) {
  const int d = kv.head_dim, H = kv.kv_heads, b = p.bits, G = p.group(d);
  const int64_t C = kv.tokens;
  auto St = std::make_shared<std::vector<double>>(static_cast<size_t>(d) * b);  // R transposed, float64
  for (int i = 0; i < b; ++i)
    for (int c = 0; c < d; ++c) (*St)[static_cast<size_t>(c) * b + i] = P->s64[static_cast<size_t>(i) * d + c];
  // z_i = Σ_c R_ic·x_c, each summed over c ascending (c outer: the b sums advance together, each in the order
  // project_f64 uses).
  auto sign = [St, d, b](const float* x, int8_t* out) {
    std::vector<double> z(static_cast<size_t>(b), 0.0);
    ref::project_columns(St->data(), b, b, x, nullptr, d, z.data());
    for (int i = 0; i < b; ++i) out[i] = z[i] > 0 ? 1 : -1;
  };
  auto sig = std::make_shared<std::vector<int8_t>>(static_cast<size_t>(H * C * b));
  auto nrm = std::make_shared<std::vector<double>>(static_cast<size_t>(H * C));
  std::vector<float> v_hat(kv.v.size());
  for (int g = 0; g < H; ++g) {
    for (int64_t t = 0; t < C; ++t) {
      const float* k = kv.k_head(g) + t * d;
      sign(k, sig->data() + (g * C + t) * b);
      double nn = 0;
      for (int c = 0; c < d; ++c) nn += static_cast<double>(k[c]) * k[c];
      (*nrm)[g * C + t] = ref::round_f16_sat(static_cast<float>(std::sqrt(nn)));
    }
    // Values: every token quantized (no fp16 window).
    ref::values_qdq(kv.v_head(g), C, d, C, p.value_bits, G, v_hat.data() + g * C * d);
  }
  const bool angle = p.angle();
  const double scale = ctx.attn.softmax_scale;
  auto raw = [sig, nrm, sign, C, d, b, angle, scale, T](int g, const float* q, double* s) {
    std::vector<int8_t> sq(b);
    sign(q, sq.data());
    double qn = 0;
    for (int c = 0; c < d; ++c) qn += static_cast<double>(q[c]) * q[c];
    qn = std::sqrt(qn);
    for (int64_t t = 0; t < C; ++t) {
      const int8_t* ks = sig->data() + (g * C + t) * b;
      int agree = 0;
      for (int i = 0; i < b; ++i) agree += sq[i] * ks[i];
      const double h = (b - agree) / 2.0;
      s[t] = angle ? scale * qn * (*nrm)[g * C + t] * std::cos(sk::kPi * h / b) : (1.0 - 2.0 * h / b) / T;
    }
  };
  const uint64_t Hu = static_cast<uint64_t>(H);
  const uint64_t vrow = (static_cast<uint64_t>(d) * p.value_bits + 7) / 8;
  const double nominal = b / 8.0 + (angle ? 2.0 : 0.0) + vrow + 4.0 * (d / G);
  StorageList st(H, nominal);
  st.add("k.sketch", StorageKind::kCompressed, Hu * C * (b / 8), C)
      .add("k.norms", StorageKind::kCompressed, angle ? Hu * C * 2 : 0, C)
      .add("v.codes", StorageKind::kCompressed, Hu * C * vrow, C)
      .add("v.scale_min", StorageKind::kCompressed, Hu * C * (d / G) * 4, C)
      .add("v.window", StorageKind::kBuffer, 0, 0)
      .add("k.projection_seed", StorageKind::kFixed, 8, 0);
  if (!angle) st.add("temperature", StorageKind::kFixed, 4, 0);
  return std::make_unique<ref::SketchRefLayer>(C, d, ctx.attn, std::move(v_hat), raw, st.get());
}

}  // namespace kvb::codecs
