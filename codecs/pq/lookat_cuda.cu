// lookat's CUDA kernels (see lookat_kernels.h): nearest-centroid encode, and split-context attention with the
// lookup tables in shared memory, table-sum logits, max-shifted softmax and the weighted value sum.
#include <cuda_runtime.h>

#include "kernels/cuda/chunk.cuh"
#include "kernels/cuda/launch.h"
#include "codecs/pq/lookat_kernels.h"
#include "codecs/pq/pq_math.h"
#include "kvb/core/attn_math.h"
#include "kvb/cuda/kernel.h"

namespace kvb::codecs::gpu {

using namespace kvb::kernels::gpu;  // the formats, layer view and device primitives of kernels/cuda
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

__global__ void __launch_bounds__(kThreads)
    lookat_encode_kernel(const float* x, int64_t C, int d, int m, int K, const float* cb, uint8_t* codes) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  const int gi = blockIdx.y;  // head g = gi / m, subspace i = gi % m
  if (t >= C) return;
  const int g = gi / m, i = gi % m, dsub = d / m;
  const float* xs = x + (static_cast<int64_t>(g) * C + t) * d + static_cast<int64_t>(i) * dsub;
  const float* cs = cb + static_cast<int64_t>(gi) * K * dsub;  // [g][i] is entry g·m + i
  int best = 0;
  double best_d = 0.0;
  for (int c = 0; c < K; ++c) {
    const double s = pq::sq_dist_f64(xs, cs + static_cast<int64_t>(c) * dsub, dsub);
    if (c == 0 || s < best_d) best = c, best_d = s;
  }
  codes[(static_cast<int64_t>(g) * C + t) * m + i] = static_cast<uint8_t>(best);
}

template <Fmt VF>
__device__ __forceinline__ float load_value(const Part& p, int64_t C, int d, int g, int64_t t, int j) {
  Part q = p;
  q.fmt = VF;  // constant-folds load()'s switch
  return load(q, C, d, g, t, j);
}

template <Fmt VF>
__global__ void __launch_bounds__(kThreads) lookat_split(LookatAttendArgs a) {
  KVB_DYNAMIC_SHARED(float, sh);
  const int d = a.d, m = a.m, K = a.K, dsub = d / m;
  const int64_t C = a.C;
  float* lut = sh;               // [m][K]
  float* qs = lut + m * K;       // [d]
  float* s = qs + d;             // [chunk]
  float* red = s + a.chunk;      // [kWarps]
  const int qi = blockIdx.x, split = blockIdx.y;
  const int g = a.q_head[qi];
  const int64_t t0 = static_cast<int64_t>(split) * a.chunk;
  const int n = static_cast<int>(min(static_cast<int64_t>(a.chunk), C - t0));
  for (int j = threadIdx.x; j < d; j += kThreads) qs[j] = a.q[static_cast<int64_t>(qi) * d + j];
  __syncthreads();
  // 1. Lookup tables in shared memory (pq_math.h lut_entry: channel order, as the CPU).
  const float* cbg = a.cb + static_cast<int64_t>(g) * m * K * dsub;
  for (int e = threadIdx.x; e < m * K; e += kThreads) {
    const int i = e / K;
    lut[e] = pq::lut_entry(qs + i * dsub, cbg + static_cast<int64_t>(e) * dsub, dsub);  // [i][c] is entry i·K + c
  }
  __syncthreads();
  // 2. Logits: table sums over the chunk's codes (pq_math.h table_sum).
  for (int tt = threadIdx.x; tt < n; tt += kThreads) {
    const float acc = pq::table_sum(lut, a.codes + (static_cast<int64_t>(g) * C + t0 + tt) * m, m, K);
    const float logit = softcap_f(acc * a.softmax_scale, a.softcap);
    s[tt] = logit;
    if (a.logits) a.logits[static_cast<int64_t>(qi) * C + t0 + tt] = logit;
  }
  __syncthreads();
  // 3. Max-shifted softmax of the chunk, 4. weighted value sum (kernels/cuda/chunk.cuh).
  float mx, l;
  chunk_softmax<kThreads>(s, n, red, &mx, &l, [](int) { return 1.f; });
  chunk_values<kThreads>(s, n, d, mx, l, a.work + (static_cast<int64_t>(qi) * a.splits + split) * (d + 2),
                         [&](int i, int j) { return load_value<VF>(a.v, C, d, g, t0 + i, j); });
}

template <Fmt VF>
cudaError_t launch_vf(const LookatAttendArgs& a, cudaStream_t st) {
  const size_t shmem = lookat_attend_shmem(a.d, a.m, a.K, a.chunk);
  if (shmem > 48 * 1024) {
    const cudaError_t e =
        cudaFuncSetAttribute(lookat_split<VF>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shmem));
    if (e != cudaSuccess) return e;
  }
  KVB_LAUNCH(dim3(a.nq, a.splits), kThreads, shmem, st, lookat_split<VF>)(a);
  const cudaError_t e = cudaGetLastError();
  return e != cudaSuccess ? e : launch_attend_merge(a.work, a.nq, a.splits, a.d, a.out, st);
}

}  // namespace

cudaError_t launch_lookat_encode(const float* x, int heads, int64_t C, int d, int m, int K, const float* cb,
                                 uint8_t* codes, cudaStream_t s) {
  if (C <= 0 || heads <= 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>((C + kThreads - 1) / kThreads), static_cast<unsigned>(heads * m));
  KVB_LAUNCH(grid, kThreads, 0, s, lookat_encode_kernel)(x, C, d, m, K, cb, codes);
  return cudaGetLastError();
}

size_t lookat_attend_shmem(int d, int m, int K, int chunk) {
  return (static_cast<size_t>(m) * K + d + chunk + kWarps) * sizeof(float);
}

cudaError_t launch_lookat_attend(const LookatAttendArgs& a, cudaStream_t st) {
  if (a.nq <= 0) return cudaSuccess;
  if (a.chunk <= 0 || a.m <= 0 || a.d % a.m != 0) return cudaErrorInvalidValue;
  if (a.v.fmt == Fmt::kTokenQuant) return launch_vf<Fmt::kTokenQuant>(a, st);
  return launch_vf<Fmt::kF16>(a, st);
}

}  // namespace kvb::codecs::gpu
