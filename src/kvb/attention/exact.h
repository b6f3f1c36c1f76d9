#pragma once
/// The exact reference attention of docs/protocol.md §1, in float64:
///   s = softmax_scale * K q (then cap*tanh(s/cap) when softcap > 0), p = softmax(s), o = pᵀ V.
#include <cstdint>

namespace kvb {

/// One logit transform shared by every path (reference, codecs, kernels).
double softcap_logit(double s, double cap);

/// K, V: [C, d] row-major float32; q: [d]. Outputs (any may be null): s[C], p[C], o[d], all float64.
void exact_attention_f64(const float* K, const float* V, int64_t C, int d, const float* q, double softmax_scale,
                         double softcap, double* s_out, double* p_out, double* o_out);

/// Shannon entropy (nats) of p[0..n).
double entropy(const double* p, int64_t n);

}  // namespace kvb
