#include "kvb/core/codec.h"

#include <cmath>

namespace kvb {

double softmax_weights(float* s, int64_t C, double* lse) {
  float m = -INFINITY;
  for (int64_t t = 0; t < C; ++t) m = s[t] > m ? s[t] : m;
  // The normalizer is summed in double: it adds C weights dominated by the largest few, where float32
  // would lose ~sqrt(C) ulps; one scalar, so it costs nothing measurable.
  double l = 0.0;
  if (std::isinf(m)) {
    // Logits overflowed float (absurd inputs): the +Inf tokens share the mass equally, never NaN; and when
    // every logit is −Inf (the max is −Inf), exp(s − max) would be NaN, so all tokens share it equally.
    for (int64_t t = 0; t < C; ++t) l += (s[t] = (s[t] == m) ? 1.f : 0.f);
  } else {
    for (int64_t t = 0; t < C; ++t) l += (s[t] = std::exp(s[t] - m));
  }
  if (lse) *lse = static_cast<double>(m) + std::log(l);  // ±Inf stays ±Inf (l >= 1)
  return l;
}

double logsumexp_logits(const float* s, int64_t n) {
  if (n <= 0) return -INFINITY;
  float m = -INFINITY;
  for (int64_t t = 0; t < n; ++t) m = s[t] > m ? s[t] : m;
  if (std::isinf(m)) return m;  // +inf: overflowed logits; -inf: every token masked
  double l = 0.0;
  for (int64_t t = 0; t < n; ++t) l += std::exp(static_cast<double>(s[t]) - m);
  return static_cast<double>(m) + std::log(l);
}

double merge_attention(const float* a, double la, const float* b, double lb, float* out, int d) {
  if (lb == -INFINITY || std::isnan(lb)) {
    if (out != a)
      for (int j = 0; j < d; ++j) out[j] = a[j];
    return la;
  }
  if (la == -INFINITY || std::isnan(la)) {
    for (int j = 0; j < d; ++j) out[j] = b[j];
    return lb;
  }
  if (std::isinf(la) && la > 0 && std::isinf(lb) && lb > 0) {
    // Both normalizers overflowed (absurd logits): the two sides share the mass equally, never NaN.
    for (int j = 0; j < d; ++j) out[j] = static_cast<float>(0.5 * a[j] + 0.5 * b[j]);
    return la;
  }
  if (std::isinf(la) && la > 0) {
    if (out != a)
      for (int j = 0; j < d; ++j) out[j] = a[j];
    return la;
  }
  if (std::isinf(lb) && lb > 0) {
    for (int j = 0; j < d; ++j) out[j] = b[j];
    return lb;
  }
  const double m = la > lb ? la : lb;
  const double wa = std::exp(la - m), wb = std::exp(lb - m), den = wa + wb;
  const double fa = wa / den, fb = wb / den;
  for (int j = 0; j < d; ++j) out[j] = static_cast<float>(fa * a[j] + fb * b[j]);
  return m + std::log(den);
}

void EncodedLayer::attend_lse(int g, const float* q, float* o_out, double* lse_out, Scratch& scratch) const {
  // scores() and attend() may use every buffer of scratch, so the logits live in a per-thread buffer of
  // their own (grown once, never freed: the hot loop does not allocate).
  thread_local std::vector<float> s;
  if (s.size() < static_cast<size_t>(tokens())) s.resize(static_cast<size_t>(tokens()));
  if (!scores(g, q, s.data(), scratch))
    throw RuntimeError("attend_lse: this codec defines no logits and does not report its normalizer");
  *lse_out = logsumexp_logits(s.data(), tokens());
  attend(g, q, o_out, scratch);
}

}  // namespace kvb
