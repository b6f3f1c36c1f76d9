#include "codecs/sketch/sketch_layer.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "codecs/common/ref_dense.h"
#include "kernels/cpu/attend_rows.h"
#include "kernels/cpu/row_kernels.h"
#include "kvb/core/attn_math.h"

namespace kvb::codecs {

SketchLayer::SketchLayer(const LayerKV& kv, AttnConfig attn, kernels::uq::RowFormat vf, int64_t value_quant_tokens)
    : kv_heads_(kv.kv_heads), C_(kv.tokens), d_(kv.head_dim), attn_(attn), vf_(vf), Vq_(value_quant_tokens),
      v_codes_(static_cast<size_t>(kv_heads_ * Vq_ * vf_.bytes())),
      v_sm_(static_cast<size_t>(kv_heads_ * Vq_ * vf_.groups())),
      v_win_(static_cast<size_t>(kv_heads_ * (C_ - Vq_) * d_)) {
  auto encode_head = [&](int g) {
    const float* v = kv.v_head(g);
    kernels::uq::encode_rows(vf_, v, Vq_, v_codes_.data() + g * Vq_ * vf_.bytes(), v_sm_.data() + g * Vq_ * vf_.groups());
    kernels::f32_to_f16_sat_row(v + Vq_ * d_, v_win_.data() + g * (C_ - Vq_) * d_, (C_ - Vq_) * d_);
  };
  // Threads over heads only for caches large enough to pay for waking them.
  if (static_cast<double>(kv_heads_) * C_ * d_ > 1e6)
    for_each_head(kv_heads_, encode_head);
  else
    for (int g = 0; g < kv_heads_; ++g) encode_head(g);
}

bool SketchLayer::scores(int g, const float* q, float* s_out, Scratch& scratch) const {
  logits(g, q, s_out, scratch);
  const float cap = attn_.softcap;
  if (cap > 0.f)
    for (int64_t t = 0; t < C_; ++t) s_out[t] = softcap_f(s_out[t], cap);
  return true;
}

bool SketchLayer::attend_many_fused(int g, const float* const* qs, int nq, float* const* outs, Scratch& scratch) const {
  using kernels::RowCodec;
  const int b = vf_.bits;
  if ((b != 2 && b != 4 && b != 8) || nq > 64) return false;
  const RowCodec vc = b == 8 ? RowCodec::kU8 : b == 4 ? RowCodec::kU4 : RowCodec::kU2;
  const kernels::StoredRows vq{vc, v_codes_.data() + g * Vq_ * vf_.bytes(),
                               reinterpret_cast<const uint16_t*>(v_sm_.data() + g * Vq_ * vf_.groups()), vf_.group};
  if (std::string(kernels::attend_rows_path(kernels::StoredRows{}, vq, d_)) == "unfused") return false;
  // Logits per query from the sketches (scores() may use floats2; the kernel's work is scratch.floats()).
  float* L = thread_floats(0, static_cast<size_t>(nq) * static_cast<size_t>(C_));
  for (int i = 0; i < nq; ++i) scores(g, qs[i], L + static_cast<size_t>(i) * C_, scratch);
  float* work = scratch.floats(static_cast<size_t>(kernels::attend_rows_work_floats(nq, d_, vf_.groups())));
  kernels::RowAttendState state;
  const uint16_t* win = v_win_.data() + static_cast<size_t>(g) * (C_ - Vq_) * d_;
  const int64_t cuts[3] = {0, Vq_, C_};
  for (int r = 0; r < 2; ++r) {
    if (cuts[r + 1] <= cuts[r]) continue;
    kernels::RowAttend a;
    a.V = r == 0 ? vq : kernels::StoredRows{RowCodec::kF16, win};
    a.rows = cuts[r + 1] - cuts[r], a.d = d_, a.qs = qs, a.nq = nq, a.outs = outs;
    a.logits = L + cuts[r], a.logits_stride = C_;
    a.state = &state, a.finish = cuts[r + 1] == C_;
    if (!kernels::attend_rows_fused(a, work)) return false;
  }
  return true;
}

void SketchLayer::attend_many(int g, const float* const* qs, int nq, float* const* outs, Scratch& scratch) const {
  if (nq == 1) return attend(g, qs[0], outs[0], scratch);
  if (attend_many_fused(g, qs, nq, outs, scratch)) return;
  const kernels::RowKernels& K = kernels::row_kernels_switched();
  const uint8_t* codes = v_codes_.data() + g * Vq_ * vf_.bytes();
  const kernels::uq::GroupParams* sm = v_sm_.data() + g * Vq_ * vf_.groups();
  const uint16_t* win = v_win_.data() + static_cast<size_t>(g) * (C_ - Vq_) * d_;
  attend_many_rows(
      C_, d_, kernels::uq::decode_scratch_floats(d_), qs, nq, outs, scratch,
      [&](const float* const* qc, int nc, float* s) {
        for (int i = 0; i < nc; ++i) scores(g, qc[i], s + static_cast<size_t>(i) * C_, scratch);  // floats2 only
      },
      [&](int64_t t0, int n, float* rows, float* tmp) {
        int r = 0;
        if (t0 < Vq_) {
          r = static_cast<int>(std::min<int64_t>(n, Vq_ - t0));
          kernels::uq::decode_rows(vf_, codes + t0 * vf_.bytes(), sm + t0 * vf_.groups(), r, rows, tmp);
        }
        if (r < n)  // fp16 window
          K.from_f16(win + (t0 + r - Vq_) * d_, rows + static_cast<int64_t>(r) * d_, static_cast<int64_t>(n - r) * d_);
      },
      [](float*) {}, 1.f);
}

void SketchLayer::attend_one(int g, const float* q, float* o_out, double* lse_out, Scratch& scratch) const {
  float* s = scratch.floats(static_cast<size_t>(C_));
  scores(g, q, s, scratch);
  const double l = softmax_weights(s, C_, lse_out);
  for (int j = 0; j < d_; ++j) o_out[j] = 0.f;
  kernels::uq::accumulate_rows(vf_, s, v_codes_.data() + g * Vq_ * vf_.bytes(), v_sm_.data() + g * Vq_ * vf_.groups(), Vq_,
                      o_out, scratch.floats2(vf_.scratch_floats()));
  const auto axpy = kernels::row_kernels().axpy_f16;
  const uint16_t* win = v_win_.data() + static_cast<size_t>(g) * (C_ - Vq_) * d_;
  for (int64_t t = Vq_; t < C_; ++t, win += d_)
    if (s[t] != 0.f) axpy(s[t], win, o_out, d_);
  const float inv = static_cast<float>(1.0 / l);
  for (int j = 0; j < d_; ++j) o_out[j] *= inv;
}

void SketchLayer::add_value_storage(StorageList& st) const {
  st.add("v.codes", StorageKind::kCompressed, bytes_of(v_codes_), Vq_)
      .add("v.scale_min", StorageKind::kCompressed, bytes_of(v_sm_), Vq_)
      .add("v.window", StorageKind::kBuffer, bytes_of(v_win_), C_ - Vq_);
}

void SketchLayer::add_value_buffers(std::vector<NamedBuffer>& out) const {
  out.push_back(named_buffer("v.codes", v_codes_));
  out.push_back(named_buffer("v.scale_min", v_sm_));
  out.push_back(named_buffer("v.window", v_win_));
}

namespace ref {

void SketchRefLayer::logits(int g, const float* q, std::vector<double>& s) const {
  s.assign(static_cast<size_t>(C_), 0.0);
  raw_(g, q, s.data());
  if (attn_.softcap > 0.f)
    for (double& x : s) x = attn_.softcap * std::tanh(x / attn_.softcap);
}

bool SketchRefLayer::scores(int g, const float* q, float* s_out, Scratch&) const {
  std::vector<double> s;
  logits(g, q, s);
  for (int64_t t = 0; t < C_; ++t) s_out[t] = static_cast<float>(s[t]);
  return true;
}

double SketchRefLayer::attend_f64(int g, const float* q, float* o_out) const {
  std::vector<double> s;
  logits(g, q, s);
  double m = -INFINITY;
  for (double x : s) m = std::max(m, x);
  double l = 0;
  for (double& x : s) l += (x = std::exp(x - m));
  std::vector<double> o(static_cast<size_t>(d_), 0.0);
  const float* V = v_.data() + static_cast<size_t>(g) * C_ * d_;
  for (int64_t t = 0; t < C_; ++t)
    for (int j = 0; j < d_; ++j) o[j] += s[t] * V[t * d_ + j];
  for (int j = 0; j < d_; ++j) o_out[j] = static_cast<float>(o[j] / l);
  return m + std::log(l);
}

namespace {
// Not a KVB_CPU_CLONES function on purpose: the x86-64-v3 clone would contract z + col·x into an FMA, and
// these sums must round exactly like sk::project_f64 (compiled for the baseline, no FMA). An AVX2 clone
// without FMA (4 doubles per instruction, each product and sum rounded separately) is safe.
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target_clones("avx2", "default")))
#endif
void add_column(const double* col, double xc, int n, double* z) {
  for (int i = 0; i < n; ++i) z[i] += col[i] * xc;
}
}  // namespace

void project_columns(const double* St, int rows, int n, const float* x, const int* channels, int nc, double* z) {
  for (int i = 0; i < n; ++i) z[i] = 0.0;
  for (int a = 0; a < nc; ++a) {
    const int c = channels ? channels[a] : a;
    add_column(St + static_cast<size_t>(c) * rows, static_cast<double>(x[c]), n, z);
  }
}

void values_qdq(const float* V, int64_t C, int d, int64_t Vq, int bits, int group, float* out) {
  for (int64_t t = 0; t < Vq; ++t)
    for (int j0 = 0; j0 < d; j0 += group) minmax_qdq(V + t * d + j0, group, 1, bits, out + t * d + j0);
  for (int64_t i = Vq * d; i < C * d; ++i) out[i] = round_f16_sat(V[i]);
}

}  // namespace ref
}  // namespace kvb::codecs
