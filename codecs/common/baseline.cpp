#include "codecs/common/baseline.h"

#include <cmath>

#include "kernels/cpu/row_kernels.h"
#include "kvb/core/attn_math.h"
#include "kvb/core/error.h"

namespace kvb::codecs {

void check_layer(const LayerKV& kv, const std::string& codec) {
  KVB_CHECK(kv.kv_heads >= 1 && kv.tokens >= 1 && kv.head_dim >= 1, DataError,
            "{}: cannot encode a cache of {} KV heads x {} tokens x head_dim {} (each must be >= 1)", codec,
            kv.kv_heads, kv.tokens, kv.head_dim);
  const size_t n = static_cast<size_t>(kv.kv_heads) * static_cast<size_t>(kv.tokens) * static_cast<size_t>(kv.head_dim);
  KVB_CHECK(kv.k.size() == n && kv.v.size() == n, DataError,
            "{}: cache of shape [{}, {}, {}] needs {} floats for keys and values, found {} and {}", codec,
            kv.kv_heads, kv.tokens, kv.head_dim, n, kv.k.size(), kv.v.size());
}

void to_logits(float* s, int64_t n, const AttnConfig& attn, float factor) {
  const float scale = attn.softmax_scale, cap = attn.softcap;
  if (cap > 0.f) {
    for (int64_t t = 0; t < n; ++t) s[t] = softcap_f(scale * (factor * s[t]), cap);
  } else {
    for (int64_t t = 0; t < n; ++t) s[t] = scale * (factor * s[t]);
  }
}

bool BaselineLayer::scores(int g, const float* q, float* s_out, Scratch& scratch) const {
  key_dots(g, q, s_out, scratch);
  to_logits(s_out, C_, attn_);
  return true;
}

void BaselineLayer::attend_many(int g, const float* const* qs, int nq, float* const* outs, Scratch& scratch) const {
  if (attend_many_fused(g, qs, nq, outs, scratch)) return;
  if (nq == 1) return attend(g, qs[0], outs[0], scratch);
  const float kf = key_factor(g), vf = value_factor(g);
  const size_t tmp = decode_tmp_floats();
  attend_many_rows(
      C_, d_, tmp, qs, nq, outs, scratch,
      [&](const float* const* qc, int nc, float* s) {
        decoded_row_dots(C_, d_, tmp, qc, nc, s, scratch,
                         [&](int64_t t0, int n, float* rows, float* t) { decode_keys(g, t0, n, rows, t); });
        for (int i = 0; i < nc; ++i) to_logits(s + static_cast<size_t>(i) * C_, C_, attn_, kf);
      },
      [&](int64_t t0, int n, float* rows, float* t) { decode_values(g, t0, n, rows, t); }, [](float*) {}, vf);
}

void BaselineLayer::attend_one(int g, const float* q, float* o_out, double* lse_out, Scratch& scratch) const {
  float* s = scratch.floats(static_cast<size_t>(C_));
  scores(g, q, s, scratch);
  const double l = softmax_weights(s, C_, lse_out);
  weighted_values(g, s, o_out, scratch);
  const float inv = static_cast<float>(1.0 / l);  // l >= 1: the max token contributes exp(0)
  for (int j = 0; j < d_; ++j) o_out[j] *= inv;
}

bool attend_many_coded_fused(const kernels::StoredRows& K, const kernels::StoredRows& V, int64_t rows, int d,
                             const AttnConfig& attn, const float* const* qs, int nq, float* const* outs,
                             Scratch& scratch, float key_factor, float out_factor, const kernels::RowSegment* segs,
                             int nsegs, kernels::RowAttendState* state, bool finish) {
  if (attn.softcap != 0.f) return false;
  kernels::RowAttend a;
  a.K = K, a.V = V, a.rows = rows, a.d = d, a.qs = qs, a.nq = nq, a.outs = outs;
  a.segs = segs, a.nsegs = nsegs;
  a.softmax_scale = attn.softmax_scale, a.key_factor = key_factor, a.out_factor = out_factor;
  a.state = state, a.finish = finish;
  const int groups = std::max(K.group > 0 ? d / K.group : 0, V.group > 0 ? d / V.group : 0);
  return kernels::attend_rows_fused(
      a, scratch.floats(static_cast<size_t>(kernels::attend_rows_work_floats(nq, d, groups))));
}

bool attend_many_f16_fused(const uint16_t* K, const uint16_t* V, int64_t rows, int d, const AttnConfig& attn,
                           const float* const* qs, int nq, float* const* outs, Scratch& scratch,
                           const kernels::RowSegment* segs, int nsegs) {
  return attend_many_coded_fused({kernels::RowCodec::kF16, K}, {kernels::RowCodec::kF16, V}, rows, d, attn, qs, nq,
                                 outs, scratch, 1.f, 1.f, segs, nsegs);
}

float* thread_floats(int which, size_t n) {
  thread_local std::vector<float> buf[2];
  auto& b = buf[which];  // 0 or 1 (baseline.h)
  if (b.size() < n) b.resize(n);
  return b.data();
}

}  // namespace kvb::codecs
