#include "kvb/attention/exact.h"

#include <cmath>
#include <limits>
#include <vector>

namespace kvb {

double softcap_logit(double s, double cap) { return cap > 0 ? cap * std::tanh(s / cap) : s; }

void exact_attention_f64(const float* K, const float* V, int64_t C, int d, const float* q, double softmax_scale,
                         double softcap, double* s_out, double* p_out, double* o_out) {
  std::vector<double> s(static_cast<size_t>(C));
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t t = 0; t < C; ++t) {
    const float* k = K + t * d;
    double acc = 0;
    for (int j = 0; j < d; ++j) acc += static_cast<double>(q[j]) * static_cast<double>(k[j]);
    s[t] = softcap_logit(softmax_scale * acc, softcap);
    m = std::max(m, s[t]);
  }
  std::vector<double> p(static_cast<size_t>(C));
  double z = 0;
  for (int64_t t = 0; t < C; ++t) {
    p[t] = std::exp(s[t] - m);
    z += p[t];
  }
  for (int64_t t = 0; t < C; ++t) p[t] /= z;
  if (s_out)
    for (int64_t t = 0; t < C; ++t) s_out[t] = s[t];
  if (p_out)
    for (int64_t t = 0; t < C; ++t) p_out[t] = p[t];
  if (o_out) {
    for (int j = 0; j < d; ++j) o_out[j] = 0;
    for (int64_t t = 0; t < C; ++t) {
      const float* v = V + t * d;
      for (int j = 0; j < d; ++j) o_out[j] += p[t] * static_cast<double>(v[j]);
    }
  }
}

double entropy(const double* p, int64_t n) {
  double h = 0;
  for (int64_t i = 0; i < n; ++i)
    if (p[i] > 0) h -= p[i] * std::log(p[i]);
  return h;
}

}  // namespace kvb
