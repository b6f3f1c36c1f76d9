// llama2.c checkpoint loader and run.c-equivalent float32 forward pass (see llama2.h).
#include "kvb/capture/llama2.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "kernels/cpu/row_kernels.h"
#include "kvb/core/error.h"
#include "kvb/core/file_check.h"

namespace kvb {
namespace {

// run.c's building blocks, kept in the same float32 operation order.
void rmsnorm(float* o, const float* x, const float* weight, int size) {
  float ss = 0.0f;
  for (int j = 0; j < size; j++) ss += x[j] * x[j];
  ss /= static_cast<float>(size);
  ss += 1e-5f;
  ss = 1.0f / std::sqrt(ss);
  for (int j = 0; j < size; j++) o[j] = weight[j] * (ss * x[j]);
}

void softmax(float* x, int size) {
  float max_val = x[0];
  for (int i = 1; i < size; i++)
    if (x[i] > max_val) max_val = x[i];
  float sum = 0.0f;
  for (int i = 0; i < size; i++) {
    x[i] = std::exp(x[i] - max_val);
    sum += x[i];
  }
  for (int i = 0; i < size; i++) x[i] /= sum;
}

/// W (d, n) @ x (n) -> xout (d)
void matmul_runc(float* xout, const float* x, const float* w, int n, int d) {
  for (int i = 0; i < d; i++) {
    float val = 0.0f;
    const float* row = w + static_cast<size_t>(i) * static_cast<size_t>(n);
    for (int j = 0; j < n; j++) val += row[j] * x[j];
    xout[i] = val;
  }
}

}  // namespace

int argmax(const float* x, int n) {
  int best = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[best]) best = i;
  return best;
}

Llama2Model Llama2Model::load(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  require_readable_file(path, "a llama2.c checkpoint (.bin)");  // OS errors (missing, permission, loop) as such
  const uint64_t file_bytes = fs::file_size(path, ec);
  KVB_CHECK(!ec, DataError, "{}: cannot read the file size: {}", path, ec.message());
  constexpr uint64_t kHeader = 7 * sizeof(int32_t);
  KVB_CHECK(file_bytes >= kHeader, DataError,
            "{}: truncated llama2.c checkpoint: expected at least a {}-byte header, found {} bytes", path, kHeader,
            file_bytes);

  std::ifstream in(path, std::ios::binary);
  KVB_CHECK(in.good(), DataError, "{}: cannot open the checkpoint", path);
  int32_t h[7];
  in.read(reinterpret_cast<char*>(h), sizeof(h));
  KVB_CHECK(in.good(), DataError, "{}: cannot read the 28-byte header", path);

  Llama2Model m;
  m.path_ = path;
  Llama2Config& c = m.cfg_;
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.shared_classifier = h[5] > 0;
  c.vocab_size = h[5] > 0 ? h[5] : (h[5] == INT32_MIN ? 0 : -h[5]);
  c.seq_len = h[6];
  const std::string hdr = fmt::format("dim={} hidden_dim={} n_layers={} n_heads={} n_kv_heads={} vocab_size={} seq_len={}",
                                      h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
  auto in_range = [](int v, int lo, int hi) { return v >= lo && v <= hi; };
  KVB_CHECK(in_range(c.dim, 2, 1 << 16) && in_range(c.hidden_dim, 1, 1 << 18) && in_range(c.n_layers, 1, 1024) &&
                in_range(c.n_heads, 1, 1024) && in_range(c.n_kv_heads, 1, 1024) && in_range(c.vocab_size, 1, 1 << 22) &&
                in_range(c.seq_len, 1, 1 << 20),
            DataError, "{}: not a llama2.c legacy (version 0) checkpoint: implausible header ({})", path, hdr);
  KVB_CHECK(c.dim % c.n_heads == 0 && c.n_heads % c.n_kv_heads == 0 && c.head_size() % 2 == 0, DataError,
            "{}: inconsistent header ({}): expected dim divisible by n_heads, n_heads by n_kv_heads and an even "
            "head size",
            path, hdr);

  // Sizes in floats, in the file's order.
  const uint64_t dim = static_cast<uint64_t>(c.dim), hid = static_cast<uint64_t>(c.hidden_dim),
                 L = static_cast<uint64_t>(c.n_layers), V = static_cast<uint64_t>(c.vocab_size),
                 kv = static_cast<uint64_t>(c.kv_dim()), hs = static_cast<uint64_t>(c.head_size()),
                 S = static_cast<uint64_t>(c.seq_len);
  uint64_t n = 0;
  auto take = [&n](uint64_t count) {
    const uint64_t at = n;
    n += count;
    return static_cast<size_t>(at);
  };
  Offsets& o = m.off_;
  o.tok = take(V * dim);
  o.rms_att = take(L * dim);
  o.wq = take(L * dim * dim);
  o.wk = take(L * kv * dim);
  o.wv = take(L * kv * dim);
  o.wo = take(L * dim * dim);
  o.rms_ffn = take(L * dim);
  o.w1 = take(L * hid * dim);
  o.w2 = take(L * dim * hid);
  o.w3 = take(L * hid * dim);
  o.rms_final = take(dim);
  take(S * hs / 2);  // freq_cis_real (legacy; RoPE is computed as run.c does)
  take(S * hs / 2);  // freq_cis_imag
  o.wcls = c.shared_classifier ? o.tok : take(V * dim);
  const uint64_t expected = kHeader + n * sizeof(float);
  KVB_CHECK(file_bytes == expected, DataError,
            "{}: {} llama2.c checkpoint: the header ({}, {} classifier) implies {} bytes, found {} bytes", path,
            file_bytes < expected ? "truncated" : "oversized or non-legacy", hdr,
            c.shared_classifier ? "shared" : "unshared", expected, file_bytes);

  m.w_.resize(static_cast<size_t>(n));
  in.read(reinterpret_cast<char*>(m.w_.data()), static_cast<std::streamsize>(n * sizeof(float)));
  KVB_CHECK(in.good() && static_cast<uint64_t>(in.gcount()) == n * sizeof(float), DataError,
            "{}: short read: expected {} bytes of weights, got {}", path, n * sizeof(float), in.gcount());
  for (size_t i = 0; i < m.w_.size(); ++i)
    KVB_CHECK(std::isfinite(m.w_[i]), DataError, "{}: weight {} (byte offset {}) is not finite", path, i,
              kHeader + i * sizeof(float));
  return m;
}

const float* Llama2Model::rms_att(int l) const { return w_.data() + off_.rms_att + size_t(l) * cfg_.dim; }
const float* Llama2Model::wq(int l) const { return w_.data() + off_.wq + size_t(l) * cfg_.dim * cfg_.dim; }
const float* Llama2Model::wk(int l) const { return w_.data() + off_.wk + size_t(l) * cfg_.kv_dim() * cfg_.dim; }
const float* Llama2Model::wv(int l) const { return w_.data() + off_.wv + size_t(l) * cfg_.kv_dim() * cfg_.dim; }
const float* Llama2Model::wo(int l) const { return w_.data() + off_.wo + size_t(l) * cfg_.dim * cfg_.dim; }
const float* Llama2Model::rms_ffn(int l) const { return w_.data() + off_.rms_ffn + size_t(l) * cfg_.dim; }
const float* Llama2Model::w1(int l) const { return w_.data() + off_.w1 + size_t(l) * cfg_.hidden_dim * cfg_.dim; }
const float* Llama2Model::w2(int l) const { return w_.data() + off_.w2 + size_t(l) * cfg_.dim * cfg_.hidden_dim; }
const float* Llama2Model::w3(int l) const { return w_.data() + off_.w3 + size_t(l) * cfg_.hidden_dim * cfg_.dim; }

void Llama2Runner::matmul(float* xout, const float* x, const float* w, int n, int d) const {
  if (matvec_ == Matvec::kRunC) return matmul_runc(xout, x, w, n, d);
  const auto dot = kernels::row_kernels().dot_f32;
  for (int i = 0; i < d; i++) xout[i] = dot(w + static_cast<size_t>(i) * static_cast<size_t>(n), x, n);
}

void Llama2Runner::matmul_rows(float* xout, const float* x, const float* w, int n, int d, int T) const {
  if (T == 1 || matvec_ == Matvec::kRunC) {
    for (int t = 0; t < T; ++t) matmul(xout + size_t(t) * size_t(d), x + size_t(t) * size_t(n), w, n, d);
    return;
  }
  // Blocks of kRows weight rows (kRows·n floats, in L1/L2) against blocks of kTok token rows.
  constexpr int kRows = 32, kTok = 64;
  const auto dots_many = kernels::row_kernels().dots_many;
  std::vector<const float*> xs(static_cast<size_t>(T));
  for (int t = 0; t < T; ++t) xs[t] = x + size_t(t) * size_t(n);
  for (int t0 = 0; t0 < T; t0 += kTok) {
    const int nt = std::min(kTok, T - t0);
    for (int r0 = 0; r0 < d; r0 += kRows)
      dots_many(w + size_t(r0) * size_t(n), std::min(kRows, d - r0), n, xs.data() + t0, nt,
                xout + size_t(t0) * size_t(d) + size_t(r0), d);
  }
}

void Llama2Runner::prefill(const int32_t* tokens, int n, AttentionHook* hook) { run_layers(tokens, n, 0, hook); }

void Llama2Runner::copy_cache_from(const Llama2Runner& other, int n) {
  KVB_CHECK(&other.m_ == &m_ && n >= 0 && n <= c_.seq_len, UsageError,
            "copy_cache_from: {} positions of another model's runner", n);
  const size_t row = size_t(c_.kv_dim()), S = size_t(c_.seq_len);
  for (int l = 0; l < c_.n_layers; ++l) {
    const size_t off = size_t(l) * S * row;
    std::memcpy(key_cache_.data() + off, other.key_cache_.data() + off, size_t(n) * row * sizeof(float));
    std::memcpy(value_cache_.data() + off, other.value_cache_.data() + off, size_t(n) * row * sizeof(float));
  }
}

Llama2Runner::Llama2Runner(const Llama2Model& model, Matvec matvec)
    : m_(model), c_(model.config()), matvec_(matvec) {
  const size_t dim = size_t(c_.dim), hid = size_t(c_.hidden_dim), kv = size_t(c_.kv_dim()), L = size_t(c_.n_layers),
               S = size_t(c_.seq_len);
  x_.assign(dim, 0.f);
  xb_.assign(dim, 0.f);
  xb2_.assign(dim, 0.f);
  hb_.assign(hid, 0.f);
  hb2_.assign(hid, 0.f);
  q_.assign(dim, 0.f);
  att_.assign(size_t(c_.n_heads) * S, 0.f);
  logits_.assign(size_t(c_.vocab_size), 0.f);
  key_cache_.assign(L * S * kv, 0.f);
  value_cache_.assign(L * S * kv, 0.f);
  last_q_.assign(L * dim, 0.f);
  last_att_out_.assign(L * dim, 0.f);
}

const float* Llama2Runner::key(int l, int p) const {
  return key_cache_.data() + (size_t(l) * c_.seq_len + size_t(p)) * c_.kv_dim();
}
const float* Llama2Runner::value(int l, int p) const {
  return value_cache_.data() + (size_t(l) * c_.seq_len + size_t(p)) * c_.kv_dim();
}
const float* Llama2Runner::query(int l) const { return last_q_.data() + size_t(l) * c_.dim; }
const float* Llama2Runner::attn_out(int l) const { return last_att_out_.data() + size_t(l) * c_.dim; }

void Llama2Runner::rope(float* q, float* k, int pos) const {
  // RoPE, as run.c: relative positional encoding on adjacent pairs of each head (keys only below kv_dim).
  const int head_size = c_.head_size(), kv_dim = c_.kv_dim();
  for (int i = 0; i < c_.dim; i += 2) {
    const int head_dim = i % head_size;
    const float freq = 1.0f / std::pow(10000.0f, static_cast<float>(head_dim) / static_cast<float>(head_size));
    const float val = static_cast<float>(pos) * freq;
    const float fcr = std::cos(val);
    const float fci = std::sin(val);
    const int rotn = i < kv_dim ? 2 : 1;
    for (int vi = 0; vi < rotn; vi++) {
      float* vec = vi == 0 ? q : k;
      const float v0 = vec[i];
      const float v1 = vec[i + 1];
      vec[i] = v0 * fcr - v1 * fci;
      vec[i + 1] = v0 * fci + v1 * fcr;
    }
  }
}

void Llama2Runner::runc_attention(int l, int pos, const float* q, float* out) {
  // run.c's multi-head attention over positions 0..pos, in its float32 operation order.
  const int head_size = c_.head_size(), kv_mul = c_.kv_mul();
  for (int h = 0; h < c_.n_heads; h++) {
    const float* qh = q + h * head_size;
    float* att = att_.data() + size_t(h) * c_.seq_len;
    for (int t = 0; t <= pos; t++) {
      const float* k = key(l, t) + (h / kv_mul) * head_size;
      float score = 0.0f;
      for (int i = 0; i < head_size; i++) score += qh[i] * k[i];
      score /= std::sqrt(static_cast<float>(head_size));
      att[t] = score;
    }
    softmax(att, pos + 1);
    float* xb = out + h * head_size;
    std::memset(xb, 0, size_t(head_size) * sizeof(float));
    for (int t = 0; t <= pos; t++) {
      const float* v = value(l, t) + (h / kv_mul) * head_size;
      const float a = att[t];
      for (int i = 0; i < head_size; i++) xb[i] += a * v[i];
    }
  }
}

void Llama2Runner::run_layers(const int32_t* tokens, int n, int pos0, AttentionHook* hook) {
  KVB_CHECK(n >= 1 && pos0 >= 0 && pos0 + n <= c_.seq_len, UsageError,
            "{}: positions {}..{} out of range [0, seq_len={})", m_.path(), pos0, pos0 + n - 1, c_.seq_len);
  const int dim = c_.dim, kv_dim = c_.kv_dim(), hidden = c_.hidden_dim;
  const size_t N = size_t(n);
  for (auto* b : {&x_, &xb_, &xb2_, &q_}) b->resize(std::max(b->size(), N * dim));
  for (auto* b : {&hb_, &hb2_}) b->resize(std::max(b->size(), N * hidden));
  float *X = x_.data(), *XB = xb_.data(), *XO = xb2_.data(), *Q = q_.data(), *H1 = hb_.data(), *H3 = hb2_.data();
  for (int t = 0; t < n; ++t) {
    KVB_CHECK(tokens[t] >= 0 && tokens[t] < c_.vocab_size, UsageError, "{}: token id {} out of range [0, {})",
              m_.path(), tokens[t], c_.vocab_size);
    std::memcpy(X + size_t(t) * dim, m_.token_embedding() + size_t(tokens[t]) * dim, size_t(dim) * sizeof(float));
  }
  for (int l = 0; l < c_.n_layers; l++) {
    // The batch's keys and values go straight into the cache: positions pos0.. are consecutive rows there.
    float* kc = key_cache_.data() + (size_t(l) * c_.seq_len + size_t(pos0)) * kv_dim;
    float* vc = value_cache_.data() + (size_t(l) * c_.seq_len + size_t(pos0)) * kv_dim;
    for (int t = 0; t < n; ++t) rmsnorm(XB + size_t(t) * dim, X + size_t(t) * dim, m_.rms_att(l), dim);
    matmul_rows(Q, XB, m_.wq(l), dim, dim, n);
    matmul_rows(kc, XB, m_.wk(l), dim, kv_dim, n);
    matmul_rows(vc, XB, m_.wv(l), dim, kv_dim, n);
    for (int t = 0; t < n; ++t) rope(Q + size_t(t) * dim, kc + size_t(t) * kv_dim, pos0 + t);
    for (int t = 0; t < n; ++t) {
      float* q = Q + size_t(t) * dim;
      float* o = XB + size_t(t) * dim;
      if (hook)
        hook->attend(*this, l, pos0 + t, q, o);
      else
        runc_attention(l, pos0 + t, q, o);
    }
    std::memcpy(last_q_.data() + size_t(l) * dim, Q + (N - 1) * dim, size_t(dim) * sizeof(float));
    std::memcpy(last_att_out_.data() + size_t(l) * dim, XB + (N - 1) * dim, size_t(dim) * sizeof(float));
    matmul_rows(XO, XB, m_.wo(l), dim, dim, n);
    for (size_t i = 0; i < N * dim; ++i) X[i] += XO[i];
    // SwiGLU FFN: w2(silu(w1 x) * w3 x), run.c's order of operations.
    for (int t = 0; t < n; ++t) rmsnorm(XB + size_t(t) * dim, X + size_t(t) * dim, m_.rms_ffn(l), dim);
    matmul_rows(H1, XB, m_.w1(l), dim, hidden, n);
    matmul_rows(H3, XB, m_.w3(l), dim, hidden, n);
    for (size_t i = 0; i < N * hidden; ++i) H1[i] = H1[i] * (1.0f / (1.0f + std::exp(-H1[i]))) * H3[i];
    matmul_rows(XB, H1, m_.w2(l), hidden, dim, n);
    for (size_t i = 0; i < N * dim; ++i) X[i] += XB[i];
  }
}

const float* Llama2Runner::forward(int token, int pos, AttentionHook* hook) {
  run_layers(&token, 1, pos, hook);
  float* x = x_.data();
  rmsnorm(x, x, m_.rms_final(), c_.dim);
  matmul(logits_.data(), x, m_.wcls(), c_.dim, c_.vocab_size);
  return logits_.data();
}

}  // namespace kvb
