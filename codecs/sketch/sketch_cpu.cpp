#include "codecs/sketch/sketch_cpu.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <numeric>
#include <utility>

#include "kernels/cpu/row_kernels.h"
#include "codecs/sketch/sketch_math.h"
#include "kvb/core/rng.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define KVB_SK_X86 1
#define KVB_SK_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512vpopcntdq")))
#endif

namespace kvb::codecs::sk {

namespace {

/// Σ_j a_j·b_j with 4 independent partial sums (instruction-level parallelism; used only for orthogonalization).
double dot4(const double* a, const double* b, int n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int j = 0;
  for (; j + 4 <= n; j += 4) s0 += a[j] * b[j], s1 += a[j + 1] * b[j + 1], s2 += a[j + 2] * b[j + 2], s3 += a[j + 3] * b[j + 3];
  for (; j < n; ++j) s0 += a[j] * b[j];
  return (s0 + s1) + (s2 + s3);
}

Projection generate_projection(uint64_t seed, int rows, int d, bool orthogonal) {
  Projection P;
  P.rows = rows;
  P.d = d;
  P.seed = seed;
  P.orthogonal = orthogonal;
  P.s64.resize(static_cast<size_t>(rows) * d);
  Rng rng(seed);
  for (double& x : P.s64) x = rng.normal();
  if (orthogonal) {
    // Modified Gram-Schmidt, one pass (the rows of a Gaussian block are well conditioned enough that the loss
    // of orthogonality stays ~1e-13 at head_dim 1024). Rows are processed in order, so a projection with
    // fewer rows is exactly a prefix of one with more.
    const double target = std::sqrt(static_cast<double>(d));
    for (int b0 = 0; b0 < rows; b0 += d) {
      const int b1 = std::min(rows, b0 + d);
      for (int i = b0; i < b1; ++i) {
        double* r = P.s64.data() + static_cast<size_t>(i) * d;
        for (int p = b0; p < i; ++p) {
          const double* o = P.s64.data() + static_cast<size_t>(p) * d;
          const double c = dot4(r, o, d) / static_cast<double>(d);  // previous rows have norm² d
          for (int j = 0; j < d; ++j) r[j] -= c * o[j];
        }
        double n = std::sqrt(dot4(r, r, d));
        // A Gaussian row lies in the span of the previous (< d) rows with probability 0; guard anyway.
        if (!(n > 1e-12)) {
          for (int j = 0; j < d; ++j) r[j] = (j == (i - b0) % d) ? 1.0 : 0.0;
          n = 1.0;
        }
        for (int j = 0; j < d; ++j) r[j] *= target / n;
      }
    }
  }
  P.s32.resize(P.s64.size());
  P.t32.resize(P.s64.size());
  P.row_norm.resize(static_cast<size_t>(rows));
  for (int i = 0; i < rows; ++i) {
    double n = 0;
    for (int j = 0; j < d; ++j) {
      const double x = P.s64[static_cast<size_t>(i) * d + j];
      P.s32[static_cast<size_t>(i) * d + j] = static_cast<float>(x);
      P.t32[static_cast<size_t>(j) * rows + i] = static_cast<float>(x);
      n += x * x;
    }
    P.row_norm[i] = std::sqrt(n);
  }
  return P;
}

}  // namespace

Projection make_projection(uint64_t seed, int rows, int d, bool orthogonal) {
  return generate_projection(seed, rows, d, orthogonal);
}

std::shared_ptr<const Projection> Projections::get(uint64_t seed, int rows, int d, bool orthogonal) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& P : made_)
    if (P->seed == seed && P->rows == rows && P->d == d && P->orthogonal == orthogonal) return P;
  if (made_.size() >= kKeep) made_.erase(made_.begin());
  made_.push_back(std::make_shared<const Projection>(generate_projection(seed, rows, d, orthogonal)));
  return made_.back();
}

double project_f64(const Projection& P, int i, const float* x) {
  const double* r = P.row64(i);
  double z = 0;
  for (int j = 0; j < P.d; ++j) z += r[j] * static_cast<double>(x[j]);
  return z;
}

namespace {

KVB_CPU_CLONES void dense_projections(const float* s32, int n, int d, const float* x, float* z) {
  for (int i = 0; i < n; ++i) z[i] = kernels::dot_f32_inline(s32 + static_cast<size_t>(i) * d, x, d);
}

}  // namespace

void sign_sketch(const Projection& P, int n, const float* x, double x_norm, uint8_t* out) {
  std::vector<float> z(static_cast<size_t>(n));
  dense_projections(P.s32.data(), n, P.d, x, z.data());
  std::fill(out, out + n / 8, uint8_t{0});
  for (int i = 0; i < n; ++i) {
    float zi = z[i];
    if (!sign_is_certain(zi, P.d, P.row_norm[i], x_norm)) zi = project_f64(P, i, x) > 0 ? 1.f : 0.f;
    put_sign(out, i, zi);
  }
}

namespace {

/// z[i][k] = Σ_c S[i][c]·xt[c][k] for rows i < n and the kSketchBlock columns of xt [d][kSketchBlock]; four rows
/// at a time so eight vector accumulators are in flight.
KVB_CPU_CLONES void block_projections(const float* s32, int n, int d, const float* xt, float* z) {
  constexpr int B = kSketchBlock;
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    float a0[B] = {}, a1[B] = {}, a2[B] = {}, a3[B] = {};
    const float* r0 = s32 + static_cast<size_t>(i) * d;
    const float* r1 = r0 + d;
    const float* r2 = r1 + d;
    const float* r3 = r2 + d;
    for (int c = 0; c < d; ++c) {
      const float* x = xt + static_cast<size_t>(c) * B;
      for (int k = 0; k < B; ++k) {
        a0[k] += r0[c] * x[k];
        a1[k] += r1[c] * x[k];
        a2[k] += r2[c] * x[k];
        a3[k] += r3[c] * x[k];
      }
    }
    for (int k = 0; k < B; ++k) {
      z[(i + 0) * B + k] = a0[k];
      z[(i + 1) * B + k] = a1[k];
      z[(i + 2) * B + k] = a2[k];
      z[(i + 3) * B + k] = a3[k];
    }
  }
  for (; i < n; ++i) {
    float a0[B] = {};
    const float* r0 = s32 + static_cast<size_t>(i) * d;
    for (int c = 0; c < d; ++c)
      for (int k = 0; k < B; ++k) a0[k] += r0[c] * xt[static_cast<size_t>(c) * B + k];
    for (int k = 0; k < B; ++k) z[i * B + k] = a0[k];
  }
}

}  // namespace

void sign_sketch_block(const Projection& P, int n, const float* X, int64_t ldx, int T, const double* norms,
                       uint8_t* out, int64_t ldo) {
  constexpr int B = kSketchBlock;
  const int d = P.d;
  std::vector<float> xt(static_cast<size_t>(d) * B, 0.f), z(static_cast<size_t>(n) * B);
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < d; ++c) xt[static_cast<size_t>(c) * B + t] = X[t * ldx + c];
  block_projections(P.s32.data(), n, d, xt.data(), z.data());
  for (int t = 0; t < T; ++t) {
    uint8_t* o = out + t * ldo;
    std::fill(o, o + n / 8, uint8_t{0});
    for (int i = 0; i < n; ++i) {
      float zi = z[static_cast<size_t>(i) * B + t];
      if (!sign_is_certain(zi, d, P.row_norm[i], norms[t])) zi = project_f64(P, i, X + t * ldx) > 0 ? 1.f : 0.f;
      put_sign(o, i, zi);
    }
  }
}

void sign_sketch_sparse(const Projection& P, int n, const float* x, const int* idx, int ni, double x_norm,
                        uint8_t* out) {
  std::fill(out, out + n / 8, uint8_t{0});
  for (int i = 0; i < n; ++i) {
    const float* r = P.row32(i);
    float z = 0.f;
    for (int a = 0; a < ni; ++a) z += r[idx[a]] * x[idx[a]];
    if (!sign_is_certain(z, ni, P.row_norm[i], x_norm)) {
      const double* r64 = P.row64(i);
      double z64 = 0;
      for (int a = 0; a < ni; ++a) z64 += r64[idx[a]] * static_cast<double>(x[idx[a]]);
      z = z64 > 0 ? 1.f : 0.f;
    }
    put_sign(out, i, z);
  }
}

namespace {

KVB_CPU_CLONES void project_query_loop(const float* t32, int rows, int d, int n, const float* q, float* xs) {
  for (int i = 0; i < n; ++i) xs[i] = 0.f;
  for (int c = 0; c < d; ++c) kernels::axpy_f32_inline(q[c], t32 + static_cast<size_t>(c) * rows, xs, n);
}

/// 0/1 float masks of the 8 bits of every byte value (masked sums as multiply-adds the compiler vectorizes).
struct ByteMasks {
  float m[256][8];
  ByteMasks() {
    for (int b = 0; b < 256; ++b)
      for (int k = 0; k < 8; ++k) m[b][k] = (b >> k) & 1 ? 1.f : 0.f;
  }
};
const ByteMasks& byte_masks() {
  static const ByteMasks t;
  return t;
}

KVB_FORCE_INLINE float masked_sum_portable_inline(const uint8_t* bits, const float* x, int n, const ByteMasks& t) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int i = 0; i < n; i += 8) {
    const float* mk = t.m[bits[i >> 3]];
    for (int k = 0; k < 8; ++k) acc[k] += x[i + k] * mk[k];
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

KVB_CPU_CLONES void masked_sums_portable(const uint8_t* rows, int64_t stride, int64_t count, const float* x, int n,
                                         float* out) {
  const ByteMasks& t = byte_masks();
  for (int64_t r = 0; r < count; ++r) out[r] = masked_sum_portable_inline(rows + r * stride, x, n, t);
}

KVB_CPU_CLONES void hamming_portable(const uint8_t* q, const uint8_t* rows, int nbytes, int64_t count, int32_t* out) {
  for (int64_t r = 0; r < count; ++r) out[r] = hamming(q, rows + r * nbytes, nbytes);
}

#ifdef KVB_SK_X86
/// Sum of the 16 lanes.
// GCC 12's _mm512_reduce_add_ps expands to extract intrinsics that trip -Wmaybe-uninitialized inside its own
// header (a false positive on the intrinsics' undefined-vector idiom); silenced for this one function.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
KVB_SK_AVX512 inline float hsum16(__m512 a) { return _mm512_reduce_add_ps(a); }
#pragma GCC diagnostic pop

/// One masked add per 16 bits: lanes k of x[i .. i+16) join the sum where bit k of the 16-bit word at bit i is
/// set. Four accumulators over each 64-bit word (independent dependency chains), then 16- and 8-bit tails.
KVB_SK_AVX512 void masked_sums_avx512(const uint8_t* rows, int64_t stride, int64_t count, const float* x, int n,
                                      float* out) {
  for (int64_t r = 0; r < count; ++r) {
    const uint8_t* b = rows + r * stride;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 64 <= n; i += 64) {
      const uint64_t w = load_word(b + i / 8);
      a0 = _mm512_mask_add_ps(a0, static_cast<__mmask16>(w), a0, _mm512_loadu_ps(x + i));
      a1 = _mm512_mask_add_ps(a1, static_cast<__mmask16>(w >> 16), a1, _mm512_loadu_ps(x + i + 16));
      a2 = _mm512_mask_add_ps(a2, static_cast<__mmask16>(w >> 32), a2, _mm512_loadu_ps(x + i + 32));
      a3 = _mm512_mask_add_ps(a3, static_cast<__mmask16>(w >> 48), a3, _mm512_loadu_ps(x + i + 48));
    }
    for (; i + 16 <= n; i += 16) {
      const auto m = static_cast<__mmask16>(b[i / 8] | (b[i / 8 + 1] << 8));
      a0 = _mm512_mask_add_ps(a0, m, a0, _mm512_loadu_ps(x + i));
    }
    if (i < n) {  // 8 bits left: load only x[i .. i+8)
      const auto m = static_cast<__mmask16>(b[i / 8]);
      a1 = _mm512_mask_add_ps(a1, m, a1, _mm512_maskz_loadu_ps(static_cast<__mmask16>(0xff), x + i));
    }
    out[r] = hsum16(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  }
}

/// XOR + VPOPCNTQ on up to 8 words at a time (masked loads cover sketches that are not a multiple of 64 bytes).
KVB_SK_AVX512 void hamming_avx512(const uint8_t* q, const uint8_t* rows, int nbytes, int64_t count, int32_t* out) {
  const int words = nbytes / 8;
  for (int64_t r = 0; r < count; ++r) {
    const uint8_t* p = rows + r * nbytes;
    __m512i acc = _mm512_setzero_si512();
    for (int w = 0; w < words; w += 8) {
      const int k = words - w < 8 ? words - w : 8;
      const __mmask8 m = static_cast<__mmask8>((1u << k) - 1u);
      const __m512i a = _mm512_maskz_loadu_epi64(m, p + 8 * w);
      const __m512i b = _mm512_maskz_loadu_epi64(m, q + 8 * w);
      acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(a, b)));
    }
    // Lane sum through memory: GCC 12's _mm512_reduce_add_epi64 / _mm512_extracti64x4_epi64 trip
    // -Wmaybe-uninitialized inside its own header.
    alignas(64) uint64_t lanes[8];
    _mm512_store_si512(lanes, acc);
    out[r] = static_cast<int32_t>(((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
                                  ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7])));
  }
}

bool avx512_sketch_ok() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vpopcntdq");
  return ok;
}
#endif

bool use_avx512() {
#ifdef KVB_SK_X86
  return kernels::simd_kernels_enabled() && avx512_sketch_ok();
#else
  return false;
#endif
}

}  // namespace

void project_query(const Projection& P, int n, const float* q, float* xs) {
  project_query_loop(P.t32.data(), P.rows, P.d, n, q, xs);
}

void masked_sums(const uint8_t* rows, int64_t stride, int64_t count, const float* x, int n, float* out) {
#ifdef KVB_SK_X86
  if (use_avx512()) return masked_sums_avx512(rows, stride, count, x, n, out);
#endif
  masked_sums_portable(rows, stride, count, x, n, out);
}

void hamming_many(const uint8_t* q, const uint8_t* rows, int nbytes, int64_t count, int32_t* out) {
#ifdef KVB_SK_X86
  if (use_avx512() && nbytes % 8 == 0) return hamming_avx512(q, rows, nbytes, count, out);
#endif
  hamming_portable(q, rows, nbytes, count, out);
}

const char* sketch_kernels_name() { return use_avx512() ? "avx512" : "portable"; }

void top_channels(const float* x, int n, int d, int count, int* out) {
  std::vector<double> norm(static_cast<size_t>(d), 0.0);
  for (int t = 0; t < n; ++t)
    for (int c = 0; c < d; ++c) norm[c] += static_cast<double>(x[static_cast<size_t>(t) * d + c]) * x[static_cast<size_t>(t) * d + c];
  std::vector<int> order(static_cast<size_t>(d));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + count, order.end(),
                    [&](int a, int b) { return norm[a] != norm[b] ? norm[a] > norm[b] : a < b; });
  std::sort(order.begin(), order.begin() + count);
  std::copy(order.begin(), order.begin() + count, out);
}

}  // namespace kvb::codecs::sk
