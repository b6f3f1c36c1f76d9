/// TurboQuant's instances (channel split, rotations, sketches, codebooks) and the per-vector math every CPU
/// path runs: the float64 encoder (fixed order, no FMA: the CUDA encoder reproduces it bit for bit), the row
/// decoder and the query / output transforms of the rotated domain (turbo_codec.h).
#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <numeric>

#include "codecs/common/baseline.h"
#include "codecs/common/rotation.h"
#include "codecs/turbo/turbo_codec.h"
#include "codecs/turbo/turbo_math.h"
#include "kernels/cpu/hadamard.h"
#include "kernels/cpu/orthogonal.h"
#include "kernels/formats/fp16.h"
#include "kvb/core/half.h"
#include "kvb/core/hd.h"
#include "kvb/core/rng.h"

namespace kvb::codecs::turbo {
namespace {

constexpr uint64_t kTurboStream = 0x54555242'4f514e54ull;  // "TURBOQNT"

/// Per-thread float64 work rows of the encoder.
double* work(int which, int n) {
  thread_local std::vector<double> buf[3];
  auto& b = buf[which];
  if (b.size() < static_cast<size_t>(n)) b.resize(static_cast<size_t>(n));
  return b.data();
}

std::vector<double> transpose(const std::vector<double>& a, int n) {
  std::vector<double> t(a.size());
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) t[static_cast<size_t>(j) * n + i] = a[static_cast<size_t>(i) * n + j];
  return t;
}

/// y[i] = Σ_j A[i][j]·x[j], j ascending, each product and sum rounded once (A given transposed, At[j][i], so
/// the n sums advance together and the loop vectorizes without reassociating any sum).
void matvec_f64(const double* At, int n, const double* x, double* y) {
  for (int i = 0; i < n; ++i) y[i] = 0.0;
  for (int j = 0; j < n; ++j) {
    const double xj = x[j];
    const double* a = At + static_cast<size_t>(j) * n;
    for (int i = 0; i < n; ++i) y[i] = dadd_rn(y[i], dmul_rn(a[i], xj));
  }
}

}  // namespace

std::shared_ptr<const kernels::lloyd::Codebook> sphere_codebook(int n, int levels) {
  static std::mutex mu;
  static std::map<std::pair<int, int>, std::shared_ptr<const kernels::lloyd::Codebook>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[{n, levels}];
  if (!slot) {
    std::vector<double> x, w;
    kernels::lloyd::sphere_coordinate_quadrature(n, 1 << 17, x, w);
    auto cb = kernels::lloyd::solve(x, w, levels);
    // The density is even: exactly antisymmetric levels, so a zero coordinate sits on the middle boundary (0)
    // and goes to the lower level on every backend.
    kernels::lloyd::symmetrize(cb, 0.0);
    slot = std::make_shared<const kernels::lloyd::Codebook>(std::move(cb));
  }
  return slot;
}

std::vector<int> outlier_channels(const float* x, int64_t C, int d, int n_out) {
  std::vector<double> e(static_cast<size_t>(d), 0.0);
  for (int64_t t = 0; t < C; ++t)
    for (int c = 0; c < d; ++c) e[static_cast<size_t>(c)] += static_cast<double>(x[t * d + c]) * x[t * d + c];
  std::vector<int> idx(static_cast<size_t>(d));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return e[static_cast<size_t>(a)] > e[static_cast<size_t>(b)]; });
  idx.resize(static_cast<size_t>(n_out));
  std::sort(idx.begin(), idx.end());
  return idx;
}

uint64_t head_seed(uint64_t run_seed, int layer, int g) {
  return derive_seed(run_seed, {kTurboStream, static_cast<uint64_t>(layer), static_cast<uint64_t>(g)});
}

Part make_part(const TurboParams& p, bool key, int layer, int g, const float* x, int64_t C, int d, uint64_t seed) {
  const bool prod = (key ? p.k_variant : p.v_variant) == "prod";
  const int bits = key ? p.k_bits : p.v_bits;
  Part P;
  std::vector<std::vector<int>> sets;
  if (p.n_out > 0) {
    std::vector<int> out = outlier_channels(x, C, d, p.n_out), reg;
    std::vector<uint8_t> is_out(static_cast<size_t>(d), 0);
    for (int c : out) is_out[static_cast<size_t>(c)] = 1;
    for (int c = 0; c < d; ++c)
      if (!is_out[static_cast<size_t>(c)]) reg.push_back(c);
    sets = {out, reg};
    P.n_out = p.n_out;
  } else {
    std::vector<int> all(static_cast<size_t>(d));
    std::iota(all.begin(), all.end(), 0);
    sets = {all};
  }
  const uint64_t hs = head_seed(seed, layer, g);
  int bit_off = 0;
  for (size_t s = 0; s < sets.size(); ++s) {
    Instance I;
    I.channels = sets[s];
    I.n = static_cast<int>(I.channels.size());
    I.bits = bits + (p.n_out > 0 && s == 0 ? p.out_extra : 0);
    I.prod = prod;
    I.mb = prod ? I.bits - 1 : I.bits;
    const uint64_t is = derive_seed(hs, {key ? 0u : 1u, static_cast<uint64_t>(s)});
    namespace orth = kernels::orthogonal;
    if (p.rotation == "hadamard")
      I.pi = dense_rotation(I.n, kernels::hadamard::signs(I.n, derive_seed(is, {0})).data());
    else
      I.pi = *orth::memoized(orth::Kind::kHaar, I.n, derive_seed(is, {0}));
    if (prod) I.s = *orth::memoized(orth::Kind::kGaussian, I.n, derive_seed(is, {1}));
    I.pi32.assign(I.pi.begin(), I.pi.end());
    I.s32.assign(I.s.begin(), I.s.end());
    I.pit = transpose(I.pi, I.n);
    if (prod) I.st = transpose(I.s, I.n);
    if (I.mb > 0) {
      I.cb = sphere_codebook(I.n, 1 << I.mb);
      I.c32.assign(I.cb->centroids.begin(), I.cb->centroids.end());
      I.code_bit_off = bit_off;
      bit_off += I.n * I.mb;
      I.norm_slot = P.norms++;
      P.width += I.n;
    }
    if (prod) {
      I.sign_off = P.sign_bytes;
      P.sign_bytes += (I.n + 7) / 8;
      I.rnorm_slot = P.rnorms++;
      P.width += I.n;
    }
    P.inst.push_back(std::move(I));
  }
  P.code_bytes = (bit_off + 7) / 8;
  return P;
}

void encode_vector(const Part& P, const float* x, uint8_t* codes, uint16_t* norms, uint8_t* signs, uint16_t* rnorms) {
  for (const Instance& I : P.inst) {
    const int n = I.n;
    double* u = work(0, n);
    double* y = work(1, n);
    const double nrm = dsqrt_rn(norm2(x, I.channels.data(), n));
    for (int j = 0; j < n; ++j) u[j] = nrm > 0 ? ddiv_rn(x[I.channels[static_cast<size_t>(j)]], nrm) : 0.0;
    matvec_f64(I.pit.data(), n, u, y);  // y = Π u
    double nh = 0;
    if (I.mb > 0) {
      norms[I.norm_slot] = kernels::f32_to_f16_sat(static_cast<float>(nrm));
      nh = f16_to_f32(norms[I.norm_slot]);
      const double* bnd = I.cb->boundaries.data();
      const int nb = static_cast<int>(I.cb->boundaries.size());
      for (int i = 0; i < n; ++i) {
        const int c = kernels::lloyd::nearest_level(bnd, nb, y[i]);
        put_code(codes, I.code_bit_off + static_cast<int64_t>(i) * I.mb, I.mb, static_cast<unsigned>(c));
        if (I.prod) u[i] = residual(nrm, y[i], nh, I.cb->centroids[static_cast<size_t>(c)]);  // Π r
      }
    } else if (I.prod) {
      for (int i = 0; i < n; ++i) u[i] = dmul_rn(nrm, y[i]);
    }
    if (!I.prod) continue;
    rnorms[I.rnorm_slot] = kernels::f32_to_f16_sat(static_cast<float>(dsqrt_rn(sumsq(u, n))));
    double* z = work(2, n);
    matvec_f64(I.st.data(), n, u, z);  // z = S Π r
    uint8_t* sb = signs + I.sign_off;
    for (int i = 0; i < n; ++i)
      if (z[i] > 0) sb[i >> 3] = static_cast<uint8_t>(sb[i >> 3] | (1u << (i & 7)));
  }
}

void transform_query(const Part& P, const float* q, float* qt) {
  int o = 0;
  for (const Instance& I : P.inst) {
    const int n = I.n;
    float* y = qt + o;
    thread_local std::vector<float> qs, tmp;
    qs.resize(static_cast<size_t>(n)), tmp.resize(static_cast<size_t>(n));
    for (int j = 0; j < n; ++j) qs[static_cast<size_t>(j)] = q[I.channels[static_cast<size_t>(j)]];
    for (int i = 0; i < n; ++i) {
      const float* r = I.pi32.data() + static_cast<size_t>(i) * n;
      float a = 0.f;
      for (int j = 0; j < n; ++j) a += r[j] * qs[static_cast<size_t>(j)];
      tmp[static_cast<size_t>(i)] = a;
    }
    if (I.mb > 0) {
      std::copy(tmp.begin(), tmp.end(), y);
      o += n;
    }
    if (I.prod) {
      float* z = qt + o;
      for (int i = 0; i < n; ++i) {
        const float* r = I.s32.data() + static_cast<size_t>(i) * n;
        float a = 0.f;
        for (int j = 0; j < n; ++j) a += r[j] * tmp[static_cast<size_t>(j)];
        z[i] = a;
      }
      o += n;
    }
  }
}

void untransform_output(const Part& P, const float* acc, float* o, int d) {
  (void)d;
  int off = 0;
  for (const Instance& I : P.inst) {
    const int n = I.n;
    thread_local std::vector<float> a;
    a.assign(static_cast<size_t>(n), 0.f);
    if (I.mb > 0) {
      for (int i = 0; i < n; ++i) a[static_cast<size_t>(i)] = acc[off + i];
      off += n;
    }
    if (I.prod) {  // a += Sᵀ b
      const float* b = acc + off;
      for (int r = 0; r < n; ++r) {
        const float* srow = I.s32.data() + static_cast<size_t>(r) * n;
        const float br = b[r];
        for (int j = 0; j < n; ++j) a[static_cast<size_t>(j)] += srow[j] * br;
      }
      off += n;
    }
    for (int j = 0; j < n; ++j) o[I.channels[static_cast<size_t>(j)]] = 0.f;
    for (int i = 0; i < n; ++i) {  // o_ch = Πᵀ a
      const float* prow = I.pi32.data() + static_cast<size_t>(i) * n;
      const float ai = a[static_cast<size_t>(i)];
      for (int j = 0; j < n; ++j) o[I.channels[static_cast<size_t>(j)]] += prow[j] * ai;
    }
  }
}

void decode_row(const Part& P, const uint8_t* codes, const uint16_t* norms, const uint8_t* signs,
                const uint16_t* rnorms, float* row) {
  int o = 0;
  for (const Instance& I : P.inst) {
    const int n = I.n;
    if (I.mb > 0) {
      const float nh = f16_to_f32(norms[I.norm_slot]);
      const float* c = I.c32.data();
      int64_t pos = I.code_bit_off;
      for (int i = 0; i < n; ++i, pos += I.mb) row[o + i] = nh * c[get_code(codes, pos, I.mb)];
      o += n;
    }
    if (I.prod) {
      const float g = qjl_scale(n, rnorms[I.rnorm_slot]);
      const uint8_t* sb = signs + I.sign_off;
      for (int i = 0; i < n; ++i) row[o + i] = sign_bit(sb, i) ? g : -g;
      o += n;
    }
  }
}

Storage layer_storage(const std::vector<Part>& k, const std::vector<Part>& v, int64_t C, int d) {
  const int H = static_cast<int>(k.size());
  const Part& K = k[0];
  const Part& V = v[0];
  const uint64_t rows = static_cast<uint64_t>(H) * static_cast<uint64_t>(C);
  StorageList st(H, static_cast<double>(K.code_bytes + 2 * K.norms + K.sign_bytes + 2 * K.rnorms + V.code_bytes +
                                        2 * V.norms + V.sign_bytes + 2 * V.rnorms));
  auto add = [&](const std::string& p, const std::vector<Part>& heads) {
    const Part& P = heads[0];
    if (P.code_bytes) st.add(p + ".codes", StorageKind::kCompressed, rows * P.code_bytes, C);
    if (P.norms) st.add(p + ".norm", StorageKind::kCompressed, rows * 2 * P.norms, C);
    if (P.sign_bytes) st.add(p + ".qjl", StorageKind::kCompressed, rows * P.sign_bytes, C);
    if (P.rnorms) st.add(p + ".rnorm", StorageKind::kCompressed, rows * 2 * P.rnorms, C);
    if (P.n_out > 0) st.add(p + ".channels", StorageKind::kFixed, channel_bytes(heads, d).size(), 0);
    uint64_t cb = 0;
    for (const auto& I : P.inst) cb += 4ull * I.c32.size();
    if (cb) st.add(p + ".codebooks", StorageKind::kFixed, cb, 0);
  };
  add("k", k);
  add("v", v);
  st.add("seeds", StorageKind::kFixed, 8ull * static_cast<uint64_t>(H), 0);
  return st.get();
}

std::vector<uint8_t> channel_bytes(const std::vector<Part>& heads, int d) {
  std::vector<uint8_t> b;
  for (const auto& P : heads)
    for (int c : P.inst[0].channels) {
      b.push_back(static_cast<uint8_t>(c & 0xff));
      if (d > 256) b.push_back(static_cast<uint8_t>(c >> 8));
    }
  return b;
}

}  // namespace kvb::codecs::turbo
