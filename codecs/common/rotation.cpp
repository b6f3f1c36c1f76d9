#include "codecs/common/rotation.h"

#include <chrono>
#include <cmath>

#include <fmt/format.h>

#include "codecs/common/baseline.h"
#include "kernels/cpu/hadamard.h"
#include "kvb/core/rng.h"

namespace kvb::codecs {
namespace hd = kernels::hadamard;

ParamSpec rotate_param() {
  return ParamSpec::Choice("rotate", "none", {"none", "hadamard"},
                           "rotate K, V and q by a seeded randomized Hadamard matrix before quantizing (blocks of the "
                           "largest power of two dividing head_dim; the output is un-rotated); none = off");
}

std::string rotate_suffix(const std::string& rotate) { return rotate == "hadamard" ? "-rh" : ""; }

std::vector<double> dense_rotation(int d, const int8_t* s) {
  const int B = hd::block_size(d);
  const double norm = 1.0 / std::sqrt(static_cast<double>(B));
  std::vector<double> R(static_cast<size_t>(d) * d, 0.0);
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) {
      if (i / B != j / B) continue;
      // Sylvester Hadamard entry: (-1)^popcount(i & j) within the block.
      const int parity = __builtin_popcount(static_cast<unsigned>((i % B) & (j % B))) & 1;
      R[static_cast<size_t>(i) * d + j] = (parity ? -norm : norm) * s[j];
    }
  return R;
}

namespace {

constexpr uint64_t kRotationStream = 0x48414441'4d415244ull;  // "HADAMARD"

/// Rotates rows [n][d] by R (forward) or R^T, through the butterflies or the dense matrix.
class Rotator {
 public:
  Rotator(int d, std::vector<int8_t> s, bool dense) : d_(d), s_(std::move(s)) {
    if (dense) R_ = dense_rotation(d, s_.data());
  }
  void forward(const float* x, float* y, int64_t n) const {
    if (R_.empty()) return hd::rotate_rows(x, y, n, d_, s_.data());
    apply(x, y, n, false);
  }
  void inverse(const float* y, float* x, int64_t n) const {
    if (R_.empty()) return hd::unrotate_rows(y, x, n, d_, s_.data());
    apply(y, x, n, true);
  }
  const std::vector<int8_t>& signs() const { return s_; }

 private:
  void apply(const float* x, float* y, int64_t n, bool transpose) const {
    std::vector<double> t(static_cast<size_t>(d_));
    for (int64_t r = 0; r < n; ++r) {
      const float* xr = x + r * d_;
      for (int i = 0; i < d_; ++i) {
        double acc = 0;
        for (int j = 0; j < d_; ++j)
          acc += (transpose ? R_[static_cast<size_t>(j) * d_ + i] : R_[static_cast<size_t>(i) * d_ + j]) * xr[j];
        t[static_cast<size_t>(i)] = acc;
      }
      for (int i = 0; i < d_; ++i) y[r * d_ + i] = static_cast<float>(t[static_cast<size_t>(i)]);
    }
  }
  int d_;
  std::vector<int8_t> s_;
  std::vector<double> R_;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// R k and R v of every KV head (observation queries copied: int and kivi do not read them).
LayerKV rotate_kv(const std::vector<Rotator>& rot, const LayerKV& kv) {
  LayerKV r;
  r.kv_heads = kv.kv_heads, r.tokens = kv.tokens, r.head_dim = kv.head_dim;
  r.k.resize(kv.k.size()), r.v.resize(kv.v.size());
  r.obs = kv.obs;
  for (int g = 0; g < kv.kv_heads; ++g) {
    rot[static_cast<size_t>(g)].forward(kv.k_head(g), r.k_head(g), kv.tokens);
    rot[static_cast<size_t>(g)].forward(kv.v_head(g), r.v_head(g), kv.tokens);
  }
  return r;
}

class RotatedLayer final : public EncodedLayer {
 public:
  RotatedLayer(std::vector<Rotator> rot, std::unique_ptr<EncodedLayer> inner, int d)
      : rot_(std::move(rot)), inner_(std::move(inner)), d_(d) {}

  int64_t tokens() const override { return inner_->tokens(); }
  Storage storage() const override {
    Storage s = inner_->storage();
    s.items.push_back(StorageItem{"rotation.signs", StorageKind::kFixed, sign_bytes() * rot_.size(), 0});
    return s;
  }
  bool scores(int g, const float* q, float* s_out, Scratch& scratch) const override {
    float* qr = thread_floats(0, static_cast<size_t>(d_));
    rot_[g].forward(q, qr, 1);
    return inner_->scores(g, qr, s_out, scratch);
  }
  void attend(int g, const float* q, float* o_out, Scratch& scratch) const override {
    float* qr = thread_floats(0, static_cast<size_t>(d_));
    float* orot = thread_floats(1, static_cast<size_t>(d_));
    rot_[g].forward(q, qr, 1);
    inner_->attend(g, qr, orot, scratch);
    rot_[g].inverse(orot, o_out, 1);
  }
  void attend_many(int g, const float* const* qs, int nq, float* const* outs, Scratch& scratch) const override {
    float* qr = thread_floats(0, static_cast<size_t>(nq) * d_);
    float* orot = thread_floats(1, static_cast<size_t>(nq) * d_);
    thread_local std::vector<const float*> qp;  // attend_many is the hot path: no allocation per call
    thread_local std::vector<float*> op;
    qp.resize(static_cast<size_t>(nq)), op.resize(static_cast<size_t>(nq));
    for (int i = 0; i < nq; ++i) {
      rot_[g].forward(qs[i], qr + static_cast<size_t>(i) * d_, 1);
      qp[static_cast<size_t>(i)] = qr + static_cast<size_t>(i) * d_;
      op[static_cast<size_t>(i)] = orot + static_cast<size_t>(i) * d_;
    }
    inner_->attend_many(g, qp.data(), nq, op.data(), scratch);
    for (int i = 0; i < nq; ++i) rot_[g].inverse(op[static_cast<size_t>(i)], outs[i], 1);
  }
  void attend_lse(int g, const float* q, float* o_out, double* lse_out, Scratch& scratch) const override {
    float* qr = thread_floats(0, static_cast<size_t>(d_));
    float* orot = thread_floats(1, static_cast<size_t>(d_));
    rot_[g].forward(q, qr, 1);
    inner_->attend_lse(g, qr, orot, lse_out, scratch);
    rot_[g].inverse(orot, o_out, 1);
  }
  std::vector<uint8_t> held_tokens(int g) const override { return inner_->held_tokens(g); }
  std::vector<NamedBuffer> buffers() const override {
    auto b = inner_->buffers();
    if (b.empty()) return b;
    std::vector<uint8_t> bits;
    for (const auto& r : rot_) {
      std::vector<uint8_t> packed(sign_bytes(), 0);
      for (int j = 0; j < d_; ++j)
        if (r.signs()[static_cast<size_t>(j)] < 0) packed[static_cast<size_t>(j / 8)] |= uint8_t(1u << (j % 8));
      bits.insert(bits.end(), packed.begin(), packed.end());
    }
    b.push_back(NamedBuffer{"rotation.signs", std::move(bits)});
    return b;
  }
  bool device_timing(const LayerKV& kv, const LayerQueries& q, int min_repeats, double min_time_s,
                     DeviceTimes* out) const override {
    // The rotations run on the host (rotation.h): time them and add them to the device's figures.
    auto t0 = std::chrono::steady_clock::now();
    LayerKV r = rotate_kv(rot_, kv);
    const double t_kv = seconds_since(t0);
    const int group = q.heads / std::max(1, kv.kv_heads);
    t0 = std::chrono::steady_clock::now();
    LayerQueries rq = q;
    for (int h = 0; h < q.heads; ++h)
      rot_[static_cast<size_t>(h / std::max(1, group))].forward(q.query(h, 0), rq.q.data() + static_cast<size_t>(h) * q.n * q.head_dim, q.n);
    const double t_q = seconds_since(t0);
    if (!inner_->device_timing(r, rq, min_repeats, min_time_s, out)) return false;
    out->encode_median_s += t_kv, out->encode_p95_s += t_kv;
    out->attend_median_s += 2 * t_q, out->attend_p95_s += 2 * t_q;  // queries in, outputs back (same cost)
    return true;
  }

 private:
  uint64_t sign_bytes() const { return static_cast<uint64_t>((d_ + 7) / 8); }
  std::vector<Rotator> rot_;
  std::unique_ptr<EncodedLayer> inner_;
  int d_;
};

}  // namespace

std::unique_ptr<EncodedLayer> encode_rotated(const std::string& rotate, int layer, const LayerKV& kv,
                                             const CodecContext& ctx, bool dense, const LayerEncoder& encode) {
  if (rotate != "hadamard") return encode(kv);
  check_layer(kv, "rotate");
  std::vector<Rotator> rot;
  for (int g = 0; g < kv.kv_heads; ++g)
    rot.emplace_back(kv.head_dim, hd::signs(kv.head_dim, derive_seed(ctx.seed, {kRotationStream, uint64_t(layer), uint64_t(g)})), dense);
  auto inner = encode(rotate_kv(rot, kv));
  return std::make_unique<RotatedLayer>(std::move(rot), std::move(inner), kv.head_dim);
}

}  // namespace kvb::codecs
