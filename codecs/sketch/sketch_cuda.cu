// CUDA kernels of the one-bit sketch codecs (see sketch_kernels.h). Encoders write the CPU layouts byte for byte:
// every sign is the certified float32 sign or, when too close to 0 to certify (sketch_math.h
// sign_is_certain), the float64 sum over channels in ascending order with explicit round-to-nearest
// operations (__dmul_rn/__dadd_rn: no FMA contraction), exactly as the CPU's project_f64 and its float64
// norms. Attention is split-context (flash-decoding) as kernels/cuda/attend.cu: one block per
// (query, chunk) computes the chunk's logits straight from the bits, a max-shifted softmax and the weighted
// value sum (values dequantized on load by kernels/cuda/layer_view.h load()); a second kernel merges the chunks.
#include <cuda_runtime.h>

#include "kernels/formats/fp16.h"
#include "kernels/cuda/chunk.cuh"
#include "kernels/cuda/launch.h"
#include "codecs/sketch/sketch_kernels.h"
#include "codecs/sketch/sketch_math.h"
#include "kvb/core/attn_math.h"
#include "kvb/core/half.h"
#include "kvb/cuda/kernel.h"

namespace kvb::codecs::sk::gpu {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

using kernels::gpu::warp_sum;
__device__ __forceinline__ int warp_sum_i(int x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

/// The encoders' per-byte math is sketch_math.h's (dense_sign_byte, sparse_sign_byte, norm2_f64), shared with
/// the host tests that check it against the CPU encoder's bytes.
__device__ __forceinline__ uint8_t dense_byte(const ProjView& P, int B, const float* x, const uint8_t* zero_mask,
                                              double xnorm) {
  return dense_sign_byte(P.s32, P.s64, P.row_norm, P.d, B, x, zero_mask, xnorm);
}
__device__ __forceinline__ uint8_t sparse_byte(const ProjView& P, int B, const float* x, const int* idx, int ni,
                                               double xnorm) {
  return sparse_sign_byte(P.s32, P.s64, P.row_norm, P.d, B, x, idx, ni, xnorm);
}

/// One block per (KV head, token group): outlier channels, norms, inlier and outlier sketches.
__global__ void __launch_bounds__(kThreads) qjl_encode_groups(QjlKeys k, const float* x, double* nw) {
  KVB_DYNAMIC_SHARED(unsigned char, smem);
  const int d = k.d;
  double* colnorm = reinterpret_cast<double*>(smem);               // [d]
  int* idx = reinterpret_cast<int*>(colnorm + d);                  // [max(no, 1)]
  uint8_t* is_out = reinterpret_cast<uint8_t*>(idx + (k.no > 0 ? k.no : 1));  // [d]
  const int64_t ng = k.Cq / k.G;
  const int g = static_cast<int>(blockIdx.x / ng);
  const int64_t b = blockIdx.x % ng;
  const float* X = x + (static_cast<int64_t>(g) * k.C + b * k.G) * d;
  for (int c = threadIdx.x; c < d; c += kThreads) {
    double s = 0;
    for (int t = 0; t < k.G; ++t) {
      const double v = X[static_cast<int64_t>(t) * d + c];
      s = dadd_rn(s, dmul_rn(v, v));
    }
    colnorm[c] = s;
    is_out[c] = 0;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    // The `no` largest column norms, ties to the lower channel (sk::top_channels), then ascending.
    for (int a = 0; a < k.no; ++a) {
      int best = -1;
      for (int c = 0; c < d; ++c)
        if (!is_out[c] && (best < 0 || colnorm[c] > colnorm[best])) best = c;
      is_out[best] = 1;
      idx[a] = best;
    }
    for (int a = 1; a < k.no; ++a)
      for (int j = a; j > 0 && idx[j - 1] > idx[j]; --j) {
        const int tmp = idx[j];
        idx[j] = idx[j - 1];
        idx[j - 1] = tmp;
      }
    uint8_t* ix = k.idx + (static_cast<int64_t>(g) * ng + b) * k.no * k.ib;
    for (int a = 0; a < k.no; ++a) write_outlier_index(ix, a, k.ib, idx[a]);
  }
  __syncthreads();
  const int64_t row0 = static_cast<int64_t>(g) * k.Cq + b * k.G;
  for (int t = threadIdx.x; t < k.G; t += kThreads) {
    const float* xt = X + static_cast<int64_t>(t) * d;
    const double ni = sqrt(norm2_f64(xt, d, is_out, 0)), no = sqrt(norm2_f64(xt, d, is_out, 1));
    nw[2 * (row0 + t)] = ni;
    nw[2 * (row0 + t) + 1] = no;
    k.norms[2 * (row0 + t)] = kernels::f32_to_f16_sat(static_cast<float>(ni));
    k.norms[2 * (row0 + t) + 1] = kernels::f32_to_f16_sat(static_cast<float>(no));
  }
  __syncthreads();
  const int mb = k.m / 8, ob = k.mo / 8;
  for (int p = threadIdx.x; p < k.G * mb; p += kThreads) {
    const int t = p / mb, B = p % mb;
    k.bits_in[(row0 + t) * mb + B] = dense_byte(k.P, B, X + static_cast<int64_t>(t) * d, is_out, nw[2 * (row0 + t)]);
  }
  for (int p = threadIdx.x; p < k.G * ob; p += kThreads) {
    const int t = p / ob, B = p % ob;
    k.bits_out[(row0 + t) * ob + B] =
        sparse_byte(k.P, B, X + static_cast<int64_t>(t) * d, idx, k.no, nw[2 * (row0 + t) + 1]);
  }
}

__global__ void h1b_norms(H1bKeys k, const float* x, double* nw) {
  const int64_t rows = static_cast<int64_t>(k.heads) * k.C;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < rows;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double n = sqrt(norm2_f64(x + r * k.d, k.d, nullptr, 0));
    nw[r] = n;
    if (k.angle) k.norms[r] = kernels::f32_to_f16_sat(static_cast<float>(n));
  }
}

__global__ void h1b_sketch(H1bKeys k, const float* x, const double* nw) {
  const int nb = k.bits / 8;
  const int64_t n = static_cast<int64_t>(k.heads) * k.C * nb;
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < n;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = p / nb;
    k.sketch[p] = dense_byte(k.P, static_cast<int>(p % nb), x + r * k.d, nullptr, nw[r]);
  }
}

// ---- attention ---------------------------------------------------------------------------------------------

/// Softmax of the chunk's logits s[0, n) and the weighted value sum; writes the partial (m, l, o[d]).
__device__ void finish_chunk(const SketchAttend& a, int64_t C, int d, int g, int qi, int split, int64_t t0, int n,
                             float* s, float* red) {
  float m, l;
  kernels::gpu::chunk_softmax<kThreads>(s, n, red, &m, &l, [](int) { return 1.f; });
  kernels::gpu::chunk_values<kThreads>(s, n, d, m, l, a.work + (static_cast<int64_t>(qi) * a.splits + split) * (d + 2),
                                      [&](int i, int j) { return kernels::gpu::load(a.v, C, d, g, t0 + i, j); });
}

__device__ __forceinline__ void put_logit(const SketchAttend& a, int64_t C, float* s, int qi, int64_t t0, int i,
                                          float raw) {
  const float logit = softcap_f(raw, a.softcap);
  s[i] = logit;
  if (a.logits) a.logits[static_cast<int64_t>(qi) * C + t0 + i] = logit;
}

/// q_sk[qi][i] = Σ_c q_c·S_ic for i < rows (the full query's projection), into the work area after the
/// partials.
__global__ void __launch_bounds__(kThreads) qjl_query(QjlKeys k, SketchAttend a) {
  const int qi = blockIdx.x;
  const int mr = k.P.rows;
  float* qsk = a.work + static_cast<int64_t>(a.nq) * a.splits * (k.d + 2) + static_cast<int64_t>(qi) * mr;
  const float* q = a.q + static_cast<int64_t>(qi) * k.d;
  for (int i = threadIdx.x; i < mr; i += kThreads) {
    float z = 0.f;
    for (int c = 0; c < k.d; ++c) z += q[c] * k.P.t32[static_cast<int64_t>(c) * mr + i];
    qsk[i] = z;
  }
}

__global__ void __launch_bounds__(kThreads) qjl_split(QjlKeys k, SketchAttend a) {
  KVB_DYNAMIC_SHARED(float, sh);
  const int d = k.d, mr = k.P.rows, mb = k.m / 8, ob = k.mo / 8;
  const int64_t C = k.C;
  float* qs = sh;             // [d]
  float* qin = qs + d;        // [m]
  float* qo = qin + k.m;      // [mr]
  float* s = qo + mr;         // [chunk]
  float* red = s + a.chunk;   // [2·kWarps]
  const int qi = blockIdx.x, split = blockIdx.y;
  const int g = a.q_head[qi];
  const int64_t t0 = static_cast<int64_t>(split) * a.chunk;
  const int n = static_cast<int>(min(static_cast<int64_t>(a.chunk), C - t0));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float* qsk = a.work + static_cast<int64_t>(a.nq) * a.splits * (d + 2) + static_cast<int64_t>(qi) * mr;
  for (int j = threadIdx.x; j < d; j += kThreads) qs[j] = a.q[static_cast<int64_t>(qi) * d + j];
  __syncthreads();
  const int64_t ng = k.Cq / k.G;
  const int64_t qend = min(t0 + n, k.Cq);
  for (int64_t gb = t0; gb < qend; gb += k.G) {  // chunks start on group boundaries (chunk % G == 0)
    const uint8_t* ix = k.idx + (static_cast<int64_t>(g) * ng + gb / k.G) * k.no * k.ib;
    float pin = 0.f, pout = 0.f;
    for (int i = threadIdx.x; i < mr; i += kThreads) {
      float o = 0.f;
      for (int a2 = 0; a2 < k.no; ++a2) {
        const int c = read_outlier_index(ix, a2, k.ib);
        o += qs[c] * k.P.t32[static_cast<int64_t>(c) * mr + i];
      }
      qo[i] = o;
      if (i < k.m) pin += (qin[i] = qsk[i] - o);
      if (i < k.mo) pout += o;
    }
    pin = warp_sum(pin);
    pout = warp_sum(pout);
    if (lane == 0) red[warp] = pin, red[kWarps + warp] = pout;
    __syncthreads();
    float tot_in = 0.f, tot_out = 0.f;
    for (int w = 0; w < kWarps; ++w) tot_in += red[w], tot_out += red[kWarps + w];
    for (int t = warp; t < k.G; t += kWarps) {
      const int64_t row = static_cast<int64_t>(g) * k.Cq + gb + t;
      // scores from bits: no dense key reconstruction (masked sums of the projected query over the set bits)
      float ms_in = 0.f, ms_out = 0.f;
      for (int B = lane; B < mb; B += 32) ms_in += masked_sum(k.bits_in + row * mb + B, qin + 8 * B, 8);
      for (int B = lane; B < ob; B += 32) ms_out += masked_sum(k.bits_out + row * ob + B, qo + 8 * B, 8);
      ms_in = warp_sum(ms_in);
      ms_out = warp_sum(ms_out);
      if (lane == 0) {
        float e = qjl_term(ms_in, tot_in, f16_to_f32(k.norms[2 * row]), k.m);
        if (k.mo > 0) e += qjl_term(ms_out, tot_out, f16_to_f32(k.norms[2 * row + 1]), k.mo);
        put_logit(a, C, s, qi, t0, static_cast<int>(gb + t - t0), a.softmax_scale * e);
      }
    }
    __syncthreads();
  }
  for (int i = warp; i < n; i += kWarps) {  // fp16 key buffer
    const int64_t t = t0 + i;
    if (t < k.Cq) continue;
    const uint16_t* r = k.res + (static_cast<int64_t>(g) * (C - k.Cq) + (t - k.Cq)) * d;
    float acc = 0.f;
    for (int j = lane; j < d; j += 32) acc += qs[j] * f16_to_f32(r[j]);
    acc = warp_sum(acc);
    if (lane == 0) put_logit(a, C, s, qi, t0, i, a.softmax_scale * acc);
  }
  __syncthreads();
  finish_chunk(a, C, d, g, qi, split, t0, n, s, red);
}

/// The query's sketch (certified signs, as the CPU) into the work area: [coef][bytes...] per query.
__global__ void __launch_bounds__(kThreads) h1b_query(H1bKeys k, SketchAttend a, int64_t qfloats) {
  __shared__ double qn;
  const int qi = blockIdx.x;
  float* area = a.work + static_cast<int64_t>(a.nq) * a.splits * (k.d + 2) + static_cast<int64_t>(qi) * qfloats;
  const float* q = a.q + static_cast<int64_t>(qi) * k.d;
  if (threadIdx.x == 0) {
    qn = sqrt(norm2_f64(q, k.d, nullptr, 0));
    area[0] = static_cast<float>(static_cast<double>(a.softmax_scale) * qn);
  }
  __syncthreads();
  uint8_t* qs = reinterpret_cast<uint8_t*>(area + 1);
  for (int B = threadIdx.x; B < k.bits / 8; B += kThreads) qs[B] = dense_byte(k.P, B, q, nullptr, qn);
}

__global__ void __launch_bounds__(kThreads) h1b_split(H1bKeys k, SketchAttend a, int64_t qfloats) {
  KVB_DYNAMIC_SHARED(float, sh);
  const int d = k.d, nb = k.bits / 8;
  const int64_t C = k.C;
  float* s = sh;              // [chunk]
  float* red = s + a.chunk;   // [2·kWarps]
  const int qi = blockIdx.x, split = blockIdx.y;
  const int g = a.q_head[qi];
  const int64_t t0 = static_cast<int64_t>(split) * a.chunk;
  const int n = static_cast<int>(min(static_cast<int64_t>(a.chunk), C - t0));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float* area = a.work + static_cast<int64_t>(a.nq) * a.splits * (d + 2) + static_cast<int64_t>(qi) * qfloats;
  const float coef = area[0];
  const uint8_t* qs = reinterpret_cast<const uint8_t*>(area + 1);
  for (int i = warp; i < n; i += kWarps) {
    const int64_t row = static_cast<int64_t>(g) * C + t0 + i;
    const uint8_t* r = k.sketch + row * nb;
    // scores from bits: no dense key reconstruction (XOR + popcount of the two sketches)
    int h = 0;
    for (int w = lane; w < nb / 8; w += 32) h += popc64(load_word(qs + 8 * w) ^ load_word(r + 8 * w));
    for (int B = (nb / 8) * 8 + lane; B < nb; B += 32) h += popc64(static_cast<uint64_t>(qs[B] ^ r[B]));
    h = warp_sum_i(h);
    if (lane == 0) put_logit(a, C, s, qi, t0, i, k.angle ? coef * f16_to_f32(k.norms[row]) * k.tab[h] : k.tab[h]);
  }
  __syncthreads();
  finish_chunk(a, C, d, g, qi, split, t0, n, s, red);
}

int grid_for(int64_t n) { return static_cast<int>(n / 256 + 1 < 65535 ? n / 256 + 1 : 65535); }

}  // namespace

cudaError_t launch_qjl_encode(const QjlKeys& k, const float* x, cudaStream_t s) {
  const int64_t ng = k.Cq / k.G;
  if (ng == 0) return cudaSuccess;
  // Norms in float64 between the phases: [heads·Cq·2] after the caller's buffer? Allocated here per call.
  double* nw = nullptr;
  cudaError_t st = cudaMallocAsync(reinterpret_cast<void**>(&nw), sizeof(double) * 2 * k.heads * k.Cq, s);
  if (st != cudaSuccess) return st;
  const size_t shmem = sizeof(double) * k.d + sizeof(int) * (k.no > 0 ? k.no : 1) + k.d;
  KVB_LAUNCH(static_cast<unsigned>(k.heads * ng), kThreads, shmem, s, qjl_encode_groups)(k, x, nw);
  st = cudaGetLastError();
  const cudaError_t f = cudaFreeAsync(nw, s);
  return st != cudaSuccess ? st : f;
}

cudaError_t launch_h1b_encode(const H1bKeys& k, const float* x, double* nw, cudaStream_t s) {
  const int64_t rows = static_cast<int64_t>(k.heads) * k.C;
  KVB_LAUNCH(grid_for(rows), 256, 0, s, h1b_norms)(k, x, nw);
  KVB_LAUNCH(grid_for(rows * (k.bits / 8)), 256, 0, s, h1b_sketch)(k, x, nw);
  return cudaGetLastError();
}

int64_t plan_sketch_attend(int nq, int64_t C, int d, int align, int64_t query_floats, int* chunk, int* splits) {
  int64_t c = align;
  while (c < 64) c += align;
  while (2 * c <= kMaxSketchChunk && static_cast<int64_t>(nq) * ((C + c - 1) / c) > 2048) c *= 2;
  *chunk = static_cast<int>(c);
  *splits = static_cast<int>((C + c - 1) / c);
  return static_cast<int64_t>(nq) * *splits * (d + 2) + static_cast<int64_t>(nq) * query_floats;
}

cudaError_t launch_qjl_attend(const QjlKeys& k, const SketchAttend& a, cudaStream_t s) {
  if (a.nq <= 0) return cudaSuccess;
  KVB_LAUNCH(a.nq, kThreads, 0, s, qjl_query)(k, a);
  const size_t shmem = (static_cast<size_t>(k.d) + k.m + k.P.rows + a.chunk + 2 * kWarps) * sizeof(float);
  KVB_LAUNCH(dim3(a.nq, a.splits), kThreads, shmem, s, qjl_split)(k, a);
  const cudaError_t e = cudaGetLastError();
  return e != cudaSuccess ? e : kernels::gpu::launch_attend_merge(a.work, a.nq, a.splits, k.d, a.out, s);
}

cudaError_t launch_h1b_attend(const H1bKeys& k, const SketchAttend& a, cudaStream_t s) {
  if (a.nq <= 0) return cudaSuccess;
  const int64_t qfloats = 1 + (k.bits / 8 + 3) / 4;
  KVB_LAUNCH(a.nq, kThreads, 0, s, h1b_query)(k, a, qfloats);
  const size_t shmem = (static_cast<size_t>(a.chunk) + 2 * kWarps) * sizeof(float);
  KVB_LAUNCH(dim3(a.nq, a.splits), kThreads, shmem, s, h1b_split)(k, a, qfloats);
  const cudaError_t e = cudaGetLastError();
  return e != cudaSuccess ? e : kernels::gpu::launch_attend_merge(a.work, a.nq, a.splits, k.d, a.out, s);
}

}  // namespace kvb::codecs::sk::gpu
