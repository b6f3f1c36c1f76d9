/// BalanceKV / uniform CPU implementation (layout and estimators: select_codec.h; walk math: walk_math.h).
///
/// Cost of the walk: a block of B rows needs every pair's kernel entry, x_ij = τ<k̄_i,k̄_j>/√d − β and
/// y_ij = <v_i,v_j> + c, for j < i: B²/2 pairs × 2 dot products of length d, i.e. O(B²·d) per block and
/// O(n·B·d) per level — about 2·B·d = 32k multiply-adds per token at B = d = 128 (float64). The level's
/// blocks are independent; the steps inside a block are sequential. Each step computes its row of the
/// kernel on the fly (no B×B Gram buffer) and then its running sum in max-shifted form (walk_math.h).
#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <numeric>
#include <vector>

#include "codecs/common/baseline.h"
#include "codecs/common/row_kernels.h"
#include "codecs/select/select_codec.h"
#include "codecs/select/walk_math.h"
#include "kvb/core/attn_math.h"

namespace kvb::codecs {
namespace {

/// Σ_j a[j]·b[j] in float64 with 4 partial sums (vectorizes in the AVX2 clone).
KVB_FORCE_INLINE double dot_d(const double* a, const double* b, int n) {
  double acc[4] = {0, 0, 0, 0};
  int j = 0;
  for (; j + 4 <= n; j += 4)
    for (int k = 0; k < 4; ++k) acc[k] += a[j + k] * b[j + k];
  double s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
}

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
      x[j] = walk::kernel_logit(dot_d(ki, kbar + static_cast<size_t>(j) * d, d), p.temp, inv_sqrt_d, p.beta);
      y[j] = walk::kernel_value(dot_d(vi, vw + static_cast<size_t>(j) * d, d), p.const_denom);
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

/// One halving (codecs.md §2.2 step 2): keeps exactly ⌊n/2⌋ of the n survivors, updating idx and w.
void halve(const std::vector<int8_t>& sigma, std::vector<int32_t>& idx, std::vector<int32_t>& w) {
  const int64_t n = static_cast<int64_t>(idx.size()), half = n / 2;
  if (half == 0) {
    idx.clear(), w.clear();
    return;
  }
  // Cut point: the first index where one class reaches ⌊n/2⌋ members; c = the later of the two.
  int64_t c_neg = 0, c_pos = 0, cnt_neg = 0, cnt_pos = 0;
  bool got_neg = false, got_pos = false;
  for (int64_t i = 0; i < n && !(got_neg && got_pos); ++i) {
    if (sigma[i] < 0) {
      if (++cnt_neg == half && !got_neg) c_neg = i, got_neg = true;
    } else {
      if (++cnt_pos == half && !got_pos) c_pos = i, got_pos = true;
    }
  }
  const int64_t c = std::max(c_neg, c_pos);
  const int8_t dropped = sigma[c];  // the class completed at c is dropped from the prefix
  // Stable order by weight: the other class of the prefix (ω = 2), then the tail after c (ω = 1); the
  // dropped class (ω = −2) is never reached because the first two hold n − ⌊n/2⌋ >= ⌊n/2⌋ tokens.
  std::vector<int32_t> ni, nw;
  ni.reserve(half), nw.reserve(half);
  for (int64_t i = 0; i <= c && static_cast<int64_t>(ni.size()) < half; ++i)
    if (sigma[i] != dropped) ni.push_back(idx[i]), nw.push_back(w[i] * 2);
  for (int64_t i = c + 1; i < n && static_cast<int64_t>(ni.size()) < half; ++i) ni.push_back(idx[i]), nw.push_back(w[i]);
  idx.swap(ni), w.swap(nw);
}

class SelectedLayer final : public EncodedLayer {
 public:
  SelectedLayer(const SelectParams& p, const LayerKV& kv, const CodecContext& ctx)
      : p_(p), H_(kv.kv_heads), d_(kv.head_dim), C_(kv.tokens), attn_(ctx.attn), split_(SelectSplit::of(p, C_)),
        kept_(split_.kept(p.levels)), rows_(split_.sink + kept_ + split_.window) {
    const size_t n = static_cast<size_t>(H_) * rows_ * d_;
    k_.resize(n), v_.resize(n);
    counts_.assign(static_cast<size_t>(H_) * (p.levels + 1), 0);
    pos_.resize(static_cast<size_t>(H_) * rows_);
    // Per weight class k (weight 2^(T−k)): the logit bias and the value factor of §2.3.
    for (int k = 0; k <= p.levels; ++k) {
      const int e = p.levels - k;
      bias_.push_back(static_cast<float>((p.consistent ? e : p.levels) * std::log(2.0)));
      vfac_.push_back(p.consistent ? 1.f : std::ldexp(1.f, e - p.levels));
    }
  }

  /// Writes KV head g from its kept set (called once per head, from encode).
  void fill_head(int g, const LayerKV& kv, const KeptSet& ks) {
    const int64_t s = split_.sink, m = split_.mid;
    int32_t* pos = &pos_[static_cast<size_t>(g) * rows_];
    int64_t r = 0;
    for (int64_t t = 0; t < s; ++t) pos[r++] = static_cast<int32_t>(t);
    for (size_t i = 0; i < ks.index.size(); ++i) {
      pos[r++] = static_cast<int32_t>(s + ks.index[i]);
      const int e = std::countr_zero(static_cast<uint32_t>(ks.weight[i]));
      ++counts_[static_cast<size_t>(g) * (p_.levels + 1) + (p_.levels - e)];
    }
    for (int64_t t = s + m; t < C_; ++t) pos[r++] = static_cast<int32_t>(t);
    const float* K = kv.k_head(g);
    const float* V = kv.v_head(g);
    uint16_t* ko = &k_[static_cast<size_t>(g) * rows_ * d_];
    uint16_t* vo = &v_[static_cast<size_t>(g) * rows_ * d_];
    for (int64_t i = 0; i < rows_; ++i) {
      f32_to_f16_sat_row(K + static_cast<size_t>(pos[i]) * d_, ko + i * d_, d_);
      f32_to_f16_sat_row(V + static_cast<size_t>(pos[i]) * d_, vo + i * d_, d_);
    }
  }

  int64_t tokens() const override { return C_; }

  Storage storage() const override {
    const int64_t verb = split_.sink + split_.window;
    const uint64_t row = 2ull * d_;
    return StorageList(H_, p_.bytes_per_token(d_))
        .add("k.kept", StorageKind::kCompressed, H_ * kept_ * row, split_.mid)
        .add("v.kept", StorageKind::kCompressed, H_ * kept_ * row, split_.mid)
        .add("w.class_counts", StorageKind::kFixed, bytes_of(counts_), 0)
        .add("k.sink_window", StorageKind::kBuffer, H_ * verb * row, verb)
        .add("v.sink_window", StorageKind::kBuffer, H_ * verb * row, verb)
        .get();
  }

  std::vector<NamedBuffer> buffers() const override {
    // The stored k/v rows are one buffer each: [head][sink | kept | window][d]; split them per item.
    std::vector<NamedBuffer> out;
    for (const char* kv : {"k", "v"}) {
      const auto& src = kv[0] == 'k' ? k_ : v_;
      NamedBuffer kept{std::string(kv) + ".kept", {}}, verb{std::string(kv) + ".sink_window", {}};
      for (int g = 0; g < H_; ++g)
        for (int64_t r = 0; r < rows_; ++r) {
          const auto* p = reinterpret_cast<const uint8_t*>(&src[(static_cast<size_t>(g) * rows_ + r) * d_]);
          auto& dst = (r >= split_.sink && r < split_.sink + kept_) ? kept.bytes : verb.bytes;
          dst.insert(dst.end(), p, p + 2 * d_);
        }
      out.push_back(std::move(kept));
      out.push_back(std::move(verb));
    }
    out.push_back(named_buffer("w.class_counts", counts_));
    return out;
  }

  std::vector<uint8_t> held_tokens(int g) const override {
    std::vector<uint8_t> m(static_cast<size_t>(C_), 0);
    const int32_t* pos = &pos_[static_cast<size_t>(g) * rows_];
    for (int64_t r = 0; r < rows_; ++r) m[pos[r]] = 1;
    return m;
  }

  bool scores(int g, const float* q, float* s_out, Scratch& scratch) const override {
    float* s = scratch.floats2(static_cast<size_t>(rows_));
    row_logits(g, q, s);
    const int32_t* pos = &pos_[static_cast<size_t>(g) * rows_];
    std::fill(s_out, s_out + C_, 0.f);
    for (int64_t r = 0; r < rows_; ++r) s_out[pos[r]] = s[r];
    return true;
  }

  void attend(int g, const float* q, float* o_out, Scratch& scratch) const override {
    float* s = scratch.floats(static_cast<size_t>(rows_));
    row_logits(g, q, s);
    // Kept rows: add the class bias (and remember the class's value factor through vf below).
    const int32_t* cnt = &counts_[static_cast<size_t>(g) * (p_.levels + 1)];
    int64_t r = split_.sink;
    for (int k = 0; k <= p_.levels; ++k)
      for (int32_t i = 0; i < cnt[k]; ++i) s[r++] += bias_[k];
    float m = -INFINITY;
    for (int64_t t = 0; t < rows_; ++t) m = s[t] > m ? s[t] : m;
    double l = 0;  // the normalizer in double (see baseline.cpp)
    for (int64_t t = 0; t < rows_; ++t) l += (s[t] = std::exp(s[t] - m));
    const float inv = static_cast<float>(1.0 / l);
    const auto axpy = row_kernels().axpy_f16;
    const uint16_t* V = &v_[static_cast<size_t>(g) * rows_ * d_];
    std::fill(o_out, o_out + d_, 0.f);
    r = 0;
    for (; r < split_.sink; ++r) axpy(s[r] * inv, V + r * d_, o_out, d_);
    for (int k = 0; k <= p_.levels; ++k) {
      const float f = vfac_[k] * inv;
      for (int32_t i = 0; i < cnt[k]; ++i, ++r) axpy(s[r] * f, V + r * d_, o_out, d_);
    }
    for (; r < rows_; ++r) axpy(s[r] * inv, V + r * d_, o_out, d_);
  }

 private:
  /// s[r] = softcap(softmax_scale·<q, k̂_r>) for every stored row r of KV head g.
  void row_logits(int g, const float* q, float* s) const {
    const auto dot = row_kernels().dot_f16;
    const uint16_t* K = &k_[static_cast<size_t>(g) * rows_ * d_];
    const float scale = attn_.softmax_scale, cap = attn_.softcap;
    for (int64_t r = 0; r < rows_; ++r) s[r] = softcap_f(scale * dot(q, K + r * d_, d_), cap);
  }

  SelectParams p_;
  int H_, d_;
  int64_t C_;
  AttnConfig attn_;
  SelectSplit split_;
  int64_t kept_, rows_;
  std::vector<uint16_t> k_, v_;  // [H][rows][d] binary16: sink | kept (by class, heaviest first) | window
  std::vector<int32_t> counts_;  // [H][T + 1]: kept rows of weight 2^T, ..., 1
  std::vector<int32_t> pos_;     // [H][rows]: original position of each row (held_tokens/scores only)
  std::vector<float> bias_, vfac_;  // per class
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
  // Group by weight class, heaviest first, by increasing position within a class.
  std::vector<size_t> order(idx.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return w[a] != w[b] ? w[a] > w[b] : idx[a] < idx[b]; });
  KeptSet ks;
  for (size_t o : order) ks.index.push_back(idx[o]), ks.weight.push_back(w[o]);
  return ks;
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
