/// BalanceKV / uniform CPU implementation (layout and estimators: select_codec.h; walk math: walk_math.h).
///
/// Cost of the walk: a block of B rows needs every pair's kernel entry, x_ij = τ<k̄_i,k̄_j>/√d − β and
/// y_ij = <v_i,v_j> + c, for j < i: B²/2 pairs × 2 dot products of length d, i.e. O(B²·d) per block and
/// O(n·B·d) per level — about 2·B·d = 32k multiply-adds per token at B = d = 128 (float64). The level's
/// blocks are independent; the steps inside a block are sequential. Each step computes its row of the
/// kernel on the fly (no B×B Gram buffer) and then its running sum in max-shifted form (walk_math.h).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <vector>

#include "codecs/common/baseline.h"
#include "kernels/cpu/row_kernels.h"
#include "codecs/select/select_codec.h"
#include "codecs/select/select_layer.h"
#include "codecs/select/walk_math.h"
#include "kvb/core/attn_math.h"

namespace kvb::codecs {
namespace {

struct WalkWork {
  std::vector<double> kbar, vw, x, y;
  void reserve(int B, int d) {
    kbar.resize(static_cast<size_t>(B) * d);
    vw.resize(static_cast<size_t>(B) * d);
    x.resize(B);
    y.resize(B);
  }
};

/// The self-balancing walk over one block of nb rows (kbar: mean-centred keys, vw: values times their
/// cumulative weights, both [nb][d] float64). sigma[0] = +1; step i draws walk::uniform01(.., block, i).
KVB_CPU_CLONES void walk_block(const double* kbar, const double* vw, int nb, int d, const SelectParams& p,
                               uint64_t seed, int layer, int head, int level, int64_t block, int8_t* sigma,
                               double* x, double* y) {
  const double inv_sqrt_d = 1.0 / std::sqrt(static_cast<double>(d));
  sigma[0] = 1;
  for (int i = 1; i < nb; ++i) {
    const double* ki = kbar + static_cast<size_t>(i) * d;
    const double* vi = vw + static_cast<size_t>(i) * d;
    double M = -INFINITY;
    for (int j = 0; j < i; ++j) {
      x[j] = walk::kernel_logit(walk::dot4(ki, kbar + static_cast<size_t>(j) * d, d), p.temp, inv_sqrt_d, p.beta);
      y[j] = walk::kernel_value(walk::dot4(vi, vw + static_cast<size_t>(j) * d, d), p.const_denom);
      M = x[j] > M ? x[j] : M;
    }
    double R = 0;
    for (int j = 0; j < i; ++j) R += std::exp(x[j] - M) * y[j] * sigma[j];
    sigma[i] = static_cast<int8_t>(
        walk::decide(M, R, p.gamma, walk::uniform01(seed, layer, head, level, static_cast<uint64_t>(block), i)));
  }
}

/// Signs of the n current survivors (rows idx[], cumulative weights w[]) at one level.
void level_signs(const SelectParams& p, const float* kmid, const float* vmid, const std::vector<int32_t>& idx,
                 const std::vector<int32_t>& w, int d, uint64_t seed, int layer, int head, int level,
                 std::vector<int8_t>& sigma, WalkWork& work) {
  const int64_t n = static_cast<int64_t>(idx.size());
  sigma.assign(static_cast<size_t>(n), 1);
  if (p.walk == SelectWalk::kUniform) {
    for (int64_t i = 0; i < n; ++i)
      sigma[i] = walk::uniform01(seed, layer, head, level, 0, static_cast<uint64_t>(i)) < 0.5 ? 1 : -1;
    return;
  }
  const int B = p.block_size;
  std::vector<double> mean(d);
  for (int64_t b0 = 0, block = 0; b0 < n; b0 += B, ++block) {
    // Padding of the last block is masked out: only its nb real rows enter the mean and the kernel.
    const int nb = static_cast<int>(std::min<int64_t>(B, n - b0));
    std::fill(mean.begin(), mean.end(), 0.0);
    for (int i = 0; i < nb; ++i) {
      const float* k = kmid + static_cast<size_t>(idx[b0 + i]) * d;
      for (int j = 0; j < d; ++j) mean[j] += k[j];
    }
    for (int j = 0; j < d; ++j) mean[j] /= nb;
    for (int i = 0; i < nb; ++i) {
      const float* k = kmid + static_cast<size_t>(idx[b0 + i]) * d;
      const float* v = vmid + static_cast<size_t>(idx[b0 + i]) * d;
      const double wi = w[b0 + i];
      for (int j = 0; j < d; ++j) {
        work.kbar[static_cast<size_t>(i) * d + j] = static_cast<double>(k[j]) - mean[j];
        work.vw[static_cast<size_t>(i) * d + j] = static_cast<double>(v[j]) * wi;
      }
    }
    walk_block(work.kbar.data(), work.vw.data(), nb, d, p, seed, layer, head, level, block, &sigma[b0],
               work.x.data(), work.y.data());
  }
}

class SelectedLayer final : public SelectLayerBase {
 public:
  SelectedLayer(const SelectParams& p, const LayerKV& kv, const CodecContext& ctx)
      : SelectLayerBase(p, kv.kv_heads, kv.tokens, kv.head_dim, ctx.attn) {
    const size_t n = static_cast<size_t>(H_) * rows_ * d_;
    k_.resize(n), v_.resize(n);
  }

  /// Stores KV head g's rows from its kept set (called once per head, from encode).
  void fill_head(int g, const LayerKV& kv, const KeptSet& ks) {
    set_head(g, ks);
    const int32_t* pos = &pos_[static_cast<size_t>(g) * rows_];
    const float* K = kv.k_head(g);
    const float* V = kv.v_head(g);
    uint16_t* ko = &k_[static_cast<size_t>(g) * rows_ * d_];
    uint16_t* vo = &v_[static_cast<size_t>(g) * rows_ * d_];
    for (int64_t i = 0; i < rows_; ++i) {
      kernels::f32_to_f16_sat_row(K + static_cast<size_t>(pos[i]) * d_, ko + i * d_, d_);
      kernels::f32_to_f16_sat_row(V + static_cast<size_t>(pos[i]) * d_, vo + i * d_, d_);
    }
  }

  std::vector<NamedBuffer> buffers() const override { return split_buffers(k_, v_); }

  bool scores(int g, const float* q, float* s_out, Scratch& scratch) const override {
    float* s = scratch.floats2(static_cast<size_t>(rows_));
    row_logits(g, q, s);
    scatter_scores(g, s, s_out);
    return true;
  }

  void attend(int g, const float* q, float* o_out, Scratch& scratch) const override {
    attend_one(g, q, o_out, nullptr, scratch);
  }
  /// attend() and its denominator's log (SelectLayerBase::attend_lse) from the same pass over the rows.
  void attend_lse(int g, const float* q, float* o_out, double* lse_out, Scratch& scratch) const override {
    attend_one(g, q, o_out, lse_out, scratch);
  }

  /// GQA groups share one pass over the rows: the fused fp16 kernel with one run per weight class
  /// (codecs/common/baseline.h attend_many_f16_fused), else attend_many_rows.
  void attend_many(int g, const float* const* qs, int nq, float* const* outs, Scratch& scratch) const override {
    kernels::RowSegment segs[32];
    const int ns = class_segments(g, segs, 32);
    const size_t off = static_cast<size_t>(g) * rows_ * d_;
    if (ns > 0 && attend_many_f16_fused(&k_[off], &v_[off], rows_, d_, attn_, qs, nq, outs, scratch, segs, ns)) return;
    if (nq == 1) return attend(g, qs[0], outs[0], scratch);
    attend_many_f16_rows(&k_[static_cast<size_t>(g) * rows_ * d_], &v_[static_cast<size_t>(g) * rows_ * d_], rows_, d_,
                         attn_, qs, nq, outs, scratch, [&](float* s) { add_class_bias(g, s); },
                         [&](float* w) { scale_class_weights(g, w); });
  }

 private:
  /// attend() and attend_lse(): lse_out (may be null) = ln Σ_r exp(ŝ_r + b_r), the normalizer divided by.
  void attend_one(int g, const float* q, float* o_out, double* lse_out, Scratch& scratch) const {
    float* s = scratch.floats(static_cast<size_t>(rows_));
    row_logits(g, q, s);
    add_class_bias(g, s);
    const double l = softmax_weights(s, rows_, lse_out);
    scale_class_weights(g, s);
    const float inv = static_cast<float>(1.0 / l);
    const auto axpy = kernels::row_kernels().axpy_f16;
    const uint16_t* V = &v_[static_cast<size_t>(g) * rows_ * d_];
    std::fill(o_out, o_out + d_, 0.f);
    for (int64_t r = 0; r < rows_; ++r)
      if (s[r] != 0.f) axpy(s[r] * inv, V + r * d_, o_out, d_);
  }

  /// s[r] = softcap(softmax_scale·<q, k̂_r>) for every stored row r of KV head g.
  void row_logits(int g, const float* q, float* s) const {
    const auto dot = kernels::row_kernels().dot_f16;
    const uint16_t* K = &k_[static_cast<size_t>(g) * rows_ * d_];
    const float scale = attn_.softmax_scale, cap = attn_.softcap;
    for (int64_t r = 0; r < rows_; ++r) s[r] = softcap_f(scale * dot(q, K + r * d_, d_), cap);
  }

  std::vector<uint16_t> k_, v_;  // [H][rows][d] binary16: sink | kept (by class, heaviest first) | window
};

}  // namespace

KeptSet select_head_cpu(const SelectParams& p, const float* kmid, const float* vmid, int64_t n, int d,
                        uint64_t seed, int layer, int head) {
  std::vector<int32_t> idx(static_cast<size_t>(n)), w(static_cast<size_t>(n), 1);
  std::iota(idx.begin(), idx.end(), 0);
  std::vector<int8_t> sigma;
  WalkWork work;
  work.reserve(p.block_size, d);
  for (int level = 0; level < p.levels && !idx.empty(); ++level) {
    level_signs(p, kmid, vmid, idx, w, d, seed, layer, head, level, sigma, work);
    halve(sigma, idx, w);
  }
  return group_by_class(idx, w);
}

std::unique_ptr<EncodedLayer> select_encode_cpu(const SelectParams& p, int layer, const LayerKV& kv,
                                                const CodecContext& ctx, WalkStats* stats) {
  auto L = std::make_unique<SelectedLayer>(p, kv, ctx);
  const SelectSplit sp = SelectSplit::of(p, kv.tokens);
  const int d = kv.head_dim;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<KeptSet> kept(static_cast<size_t>(kv.kv_heads));
  for_each_head(kv.kv_heads, [&](int g) {
    const size_t off = static_cast<size_t>(sp.sink) * d;
    kept[g] = select_head_cpu(p, kv.k_head(g) + off, kv.v_head(g) + off, sp.mid, d, ctx.seed, layer, g);
  });
  if (stats) {
    stats->ns += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
    int64_t walked = 0;
    for (int level = 0; level < p.levels; ++level) walked += sp.mid >> level;
    stats->tokens += walked * kv.kv_heads;
  }
  for (int g = 0; g < kv.kv_heads; ++g) L->fill_head(g, kv, kept[g]);
  return L;
}

}  // namespace kvb::codecs
