#include "kvb/attention/exact_batch.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

// The two hot loops get an AVX2 clone picked at load time (GCC ifunc) and an explicit AVX-512 variant
// picked at run time. No FMA anywhere (fp-contract=off where the target has FMA): every variant performs
// exactly the multiplies and adds of the baseline build, in the same order, so results do not depend on
// the machine.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(KVB_NO_CLONES)
#define KVB_CLONES __attribute__((target_clones("avx2", "default"), optimize("fp-contract=off")))
#define KVB_AVX512 __attribute__((target("avx512f"), optimize("fp-contract=off")))
#define KVB_HAVE_AVX512_PATH 1
#else
#define KVB_CLONES
#define KVB_HAVE_AVX512_PATH 0
#endif

namespace kvb {
namespace {

constexpr int64_t kTile = 16;    // tokens per score tile: the transposed K tile (d x kTile doubles) stays in L1
constexpr int64_t kVTile = 64;   // tokens per output tile
constexpr int64_t kQBlock = 64;  // queries whose logits are kept at once ([kQBlock, C] doubles)

// GCC/Clang vector extensions: explicit 4-wide double lanes (one AVX2 register; two SSE2 registers in
// the baseline clone). Lane-wise multiply and add, so every element sees exactly the scalar sequence.
// (-Wpsabi: the helpers below are internal and always inlined, so the 32-byte-vector ABI note is moot.)
#pragma GCC diagnostic ignored "-Wpsabi"
typedef double v4d __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));

inline v4d load4(const double* p) {
  v4d v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
inline void store4(double* p, v4d v) { __builtin_memcpy(p, &v, sizeof v); }
inline v4d load4f(const float* p) {
  v4f v;
  __builtin_memcpy(&v, p, sizeof v);
  return __builtin_convertvector(v, v4d);
}
inline v4d splat(double x) { return v4d{x, x, x, x}; }

/// For two queries q0, q1: acc0[b] = sum_j q0[j] * kt[j][b] (and acc1 likewise), accumulated over
/// j = 0..d-1 in order, as exact_attention_f64 does. Blocks of 16 tokens keep the 8 accumulators in
/// registers and share each loaded K element between the two queries.
KVB_CLONES void scores_tile2(const double* q0, const double* q1, const double* kt, int d, double* acc0,
                             double* acc1) {
  static_assert(kTile == 16, "the kernel holds one 16-token tile in registers");
  v4d a00 = splat(0), a01 = splat(0), a02 = splat(0), a03 = splat(0);
  v4d a10 = splat(0), a11 = splat(0), a12 = splat(0), a13 = splat(0);
  const double* kr = kt;
  for (int j = 0; j < d; ++j, kr += kTile) {
    const v4d x0 = splat(q0[j]), x1 = splat(q1[j]);
    const v4d k0 = load4(kr), k1 = load4(kr + 4), k2 = load4(kr + 8), k3 = load4(kr + 12);
    a00 += x0 * k0;
    a01 += x0 * k1;
    a02 += x0 * k2;
    a03 += x0 * k3;
    a10 += x1 * k0;
    a11 += x1 * k1;
    a12 += x1 * k2;
    a13 += x1 * k3;
  }
  store4(acc0, a00);
  store4(acc0 + 4, a01);
  store4(acc0 + 8, a02);
  store4(acc0 + 12, a03);
  store4(acc1, a10);
  store4(acc1 + 4, a11);
  store4(acc1 + 8, a12);
  store4(acc1 + 12, a13);
}

/// o0[j] += p0[t] * v[t][j] (and o1 with p1) for t = 0..nb-1 in order; d is a multiple of 16 here.
KVB_CLONES void accumulate_tile2(const double* p0, const double* p1, const float* V, int64_t nb, int d, double* o0,
                                 double* o1) {
  for (int j0 = 0; j0 < d; j0 += 16) {
    v4d a00 = load4(o0 + j0), a01 = load4(o0 + j0 + 4), a02 = load4(o0 + j0 + 8), a03 = load4(o0 + j0 + 12);
    v4d a10 = load4(o1 + j0), a11 = load4(o1 + j0 + 4), a12 = load4(o1 + j0 + 8), a13 = load4(o1 + j0 + 12);
    const float* v = V + j0;
    for (int64_t t = 0; t < nb; ++t, v += d) {
      const v4d x0 = splat(p0[t]), x1 = splat(p1[t]);
      const v4d v0 = load4f(v), v1 = load4f(v + 4), v2 = load4f(v + 8), v3 = load4f(v + 12);
      a00 += x0 * v0;
      a01 += x0 * v1;
      a02 += x0 * v2;
      a03 += x0 * v3;
      a10 += x1 * v0;
      a11 += x1 * v1;
      a12 += x1 * v2;
      a13 += x1 * v3;
    }
    store4(o0 + j0, a00);
    store4(o0 + j0 + 4, a01);
    store4(o0 + j0 + 8, a02);
    store4(o0 + j0 + 12, a03);
    store4(o1 + j0, a10);
    store4(o1 + j0 + 4, a11);
    store4(o1 + j0 + 8, a12);
    store4(o1 + j0 + 12, a13);
  }
}

#if KVB_HAVE_AVX512_PATH
typedef double v8d __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));

bool use_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
}

/// Four queries against one 16-token tile (8 accumulators; each K element loaded once for four queries).
KVB_AVX512 void scores_tile4_512(const double* const q[4], const double* kt, int d, double* acc /*[4][kTile]*/) {
  v8d a[4][2] = {};
  const double* kr = kt;
  for (int j = 0; j < d; ++j, kr += kTile) {
    v8d k0, k1;
    __builtin_memcpy(&k0, kr, 64);
    __builtin_memcpy(&k1, kr + 8, 64);
    for (int i = 0; i < 4; ++i) {
      const double s = q[i][j];
      const v8d x = {s, s, s, s, s, s, s, s};
      a[i][0] += x * k0;
      a[i][1] += x * k1;
    }
  }
  __builtin_memcpy(acc, a, sizeof a);
}

/// o_i[j] += p_i[t] * v[t][j] for four queries, t = 0..nb-1 in order; d is a multiple of 32 here.
KVB_AVX512 void accumulate_tile4_512(const double* const p[4], const float* V, int64_t nb, int d, double* const o[4]) {
  for (int j0 = 0; j0 < d; j0 += 32) {
    v8d a[4][4];
    for (int i = 0; i < 4; ++i) __builtin_memcpy(a[i], o[i] + j0, sizeof a[i]);
    const float* v = V + j0;
    for (int64_t t = 0; t < nb; ++t, v += d) {
      v8d vd[4];
      for (int k = 0; k < 4; ++k) {
        v8f vf;
        __builtin_memcpy(&vf, v + 8 * k, 32);
        vd[k] = __builtin_convertvector(vf, v8d);
      }
      for (int i = 0; i < 4; ++i) {
        const double s = p[i][t];
        const v8d x = {s, s, s, s, s, s, s, s};
        for (int k = 0; k < 4; ++k) a[i][k] += x * vd[k];
      }
    }
    for (int i = 0; i < 4; ++i) __builtin_memcpy(o[i] + j0, a[i], sizeof a[i]);
  }
}
#endif

/// o[j] += p[t] * v[t][j] for t = 0..nb-1 in order (any d).
void accumulate_tile(const double* p, const float* V, int64_t nb, int d, double* o) {
  for (int64_t t = 0; t < nb; ++t) {
    const double pt = p[t];
    const float* v = V + t * d;
    for (int j = 0; j < d; ++j) o[j] += pt * static_cast<double>(v[j]);
  }
}

}  // namespace

namespace {

/// K [C, d] as double, transposed per token tile: kt[tile][j][b] (zero-padded past C).
std::vector<double> transpose_tiles(const float* K, int64_t C, int d) {
  const int64_t ntiles = (C + kTile - 1) / kTile;
  std::vector<double> kt(static_cast<size_t>(ntiles) * d * kTile, 0.0);
  for (int64_t tile = 0; tile < ntiles; ++tile) {
    const int64_t t0 = tile * kTile, nb = std::min(kTile, C - t0);
    double* dst = kt.data() + static_cast<size_t>(tile) * d * kTile;
    for (int64_t b = 0; b < nb; ++b) {
      const float* k = K + (t0 + b) * d;
      for (int j = 0; j < d; ++j) dst[static_cast<size_t>(j) * kTile + b] = static_cast<double>(k[j]);
    }
  }
  return kt;
}

/// Logits of queries [q0, q0 + nb_q) into S [nb_q][C].
void logits_block(const std::vector<double>& kt, int64_t C, int d, const float* Q, int64_t q0, int64_t nb_q,
                  double softmax_scale, double softcap, std::vector<double>& qd, double* S) {
  qd.resize(static_cast<size_t>(nb_q) * d);
  for (int64_t i = 0; i < nb_q; ++i)
    for (int j = 0; j < d; ++j) qd[static_cast<size_t>(i) * d + j] = static_cast<double>(Q[(q0 + i) * d + j]);
  double acc[4 * kTile];
  const double* qp[4];
  for (int64_t t0 = 0, tile = 0; t0 < C; t0 += kTile, ++tile) {
    const int64_t nb = std::min(kTile, C - t0);
    const double* ktile = kt.data() + static_cast<size_t>(tile) * d * kTile;
#if KVB_HAVE_AVX512_PATH
    const int64_t step = use_avx512() ? 4 : 2;
#else
    const int64_t step = 2;
#endif
    for (int64_t i = 0; i < nb_q; i += step) {
      for (int64_t k = 0; k < step; ++k)  // a short last group repeats its last query
        qp[k] = qd.data() + static_cast<size_t>(std::min(i + k, nb_q - 1)) * d;
#if KVB_HAVE_AVX512_PATH
      if (step == 4)
        scores_tile4_512(qp, ktile, d, acc);
      else
#endif
        scores_tile2(qp[0], qp[1], ktile, d, acc, acc + kTile);
      for (int64_t k = 0; k < step && i + k < nb_q; ++k) {
        double* s = S + static_cast<size_t>(i + k) * C + t0;
        for (int64_t b = 0; b < nb; ++b) {
          const double x = softmax_scale * acc[k * kTile + b];
          s[b] = softcap > 0 ? softcap * std::tanh(x / softcap) : x;  // = kvb::softcap_logit
        }
      }
    }
  }
}

}  // namespace

void exact_logits_batch_f64(const float* K, int64_t C, int d, const float* Q, int64_t nq, double softmax_scale,
                            double softcap, double* s_out) {
  if (nq <= 0 || C <= 0) return;
  const std::vector<double> kt = transpose_tiles(K, C, d);
  std::vector<double> qd;
  for (int64_t q0 = 0; q0 < nq; q0 += kQBlock)
    logits_block(kt, C, d, Q, q0, std::min(kQBlock, nq - q0), softmax_scale, softcap, qd, s_out + q0 * C);
}

void exact_attention_batch_f64(const float* K, const float* V, int64_t C, int d, const float* Q, int64_t nq,
                               double softmax_scale, double softcap, double* o_out, double* p_out) {
  if (nq <= 0 || C <= 0) return;
  const std::vector<double> kt = transpose_tiles(K, C, d);
  std::vector<double> qd;
  std::vector<double> S(static_cast<size_t>(std::min(kQBlock, nq)) * C);
  for (int64_t q0 = 0; q0 < nq; q0 += kQBlock) {
    const int64_t nb_q = std::min(kQBlock, nq - q0);
    logits_block(kt, C, d, Q, q0, nb_q, softmax_scale, softcap, qd, S.data());
    // Softmax, exactly as exact_attention_f64: running max, exp(s - m), sequential sum, divide.
    for (int64_t i = 0; i < nb_q; ++i) {
      double* s = S.data() + static_cast<size_t>(i) * C;
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t t = 0; t < C; ++t) m = std::max(m, s[t]);
      double z = 0;
      for (int64_t t = 0; t < C; ++t) {
        s[t] = std::exp(s[t] - m);
        z += s[t];
      }
      for (int64_t t = 0; t < C; ++t) s[t] /= z;
      if (p_out) std::copy(s, s + C, p_out + (q0 + i) * C);
    }
    if (o_out) {
      for (int64_t i = 0; i < nb_q; ++i) std::fill(o_out + (q0 + i) * d, o_out + (q0 + i + 1) * d, 0.0);
      for (int64_t t0 = 0; t0 < C; t0 += kVTile) {
        const int64_t nb = std::min(kVTile, C - t0);
        int64_t i = 0;
#if KVB_HAVE_AVX512_PATH
        if (d % 32 == 0 && use_avx512()) {
          for (; i + 3 < nb_q; i += 4) {
            const double* p4[4];
            double* o4[4];
            for (int k = 0; k < 4; ++k) {
              p4[k] = S.data() + static_cast<size_t>(i + k) * C + t0;
              o4[k] = o_out + (q0 + i + k) * d;
            }
            accumulate_tile4_512(p4, V + t0 * d, nb, d, o4);
          }
        }
#endif
        if (d % 16 == 0) {
          for (; i + 1 < nb_q; i += 2)
            accumulate_tile2(S.data() + static_cast<size_t>(i) * C + t0, S.data() + static_cast<size_t>(i + 1) * C + t0,
                             V + t0 * d, nb, d, o_out + (q0 + i) * d, o_out + (q0 + i + 1) * d);
        }
        for (; i < nb_q; ++i)
          accumulate_tile(S.data() + static_cast<size_t>(i) * C + t0, V + t0 * d, nb, d, o_out + (q0 + i) * d);
      }
    }
  }
}

}  // namespace kvb
