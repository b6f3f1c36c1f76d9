#pragma once
/// Exact float64 attention for a batch of queries against one KV head: the arithmetic of
/// kvb::exact_attention_f64 (kvb/attention/exact.h), operation for operation and in the same order, so
/// the results are the same numbers — but tiled over tokens and vectorized, so the generator (ref_out)
/// and `inspect` can afford thousands of queries x thousands of tokens. Tests compare the two.
#include <cstdint>

namespace kvb {

/// K, V: [C, d] row-major float32; Q: [nq, d]. Outputs (either may be null): o_out [nq, d] and
/// p_out [nq, C] (the softmax probabilities), float64. softcap <= 0 means none.
void exact_attention_batch_f64(const float* K, const float* V, int64_t C, int d, const float* Q, int64_t nq,
                               double softmax_scale, double softcap, double* o_out, double* p_out);

/// Only the logits s [nq, C] (softmax_scale and softcap applied), as exact_attention_f64's s_out.
void exact_logits_batch_f64(const float* K, int64_t C, int d, const float* Q, int64_t nq, double softmax_scale,
                            double softcap, double* s_out);

}  // namespace kvb
