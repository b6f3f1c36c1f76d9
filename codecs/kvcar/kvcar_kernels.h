#pragma once
/// Launchers of kvcar's CUDA kernels (kvcar_cuda.cu). Host-callable; each returns cudaGetLastError().
/// The decoder runs as two matrix products per head and per call (the paper's per-step decode), then a
/// plain softmax attention over the decoded float rows.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace kvb::codecs::kvcar_gpu {

/// z[C, dl] = the stored latents as floats: fp16 rows (f16 != nullptr) or int8 rows with (scale, min) per
/// token (kvcar_math.h).
cudaError_t launch_latents(const uint16_t* f16, const int8_t* q8, const float* sm, int64_t C, int dl, float* z,
                           cudaStream_t s);

/// out[m, n] = act(A[m, k] · B[n, k]ᵀ + bias[n]) (all row-major; act = LeakyReLU(slope) when leaky, else
/// identity). A tiled shared-memory SGEMM: float32 products summed in k order.
cudaError_t launch_gemm_nt(const float* A, const float* B, int64_t m, int n, int k, const float* bias, bool leaky,
                           float slope, float* out, cudaStream_t s);

/// For each of nq queries q[i][d]: logits s_t = softcap(scale·<q, K_t>) over the C decoded rows K[C, d],
/// softmax, out[i][d] = Σ_t p_t V_t. logits [nq][C] receives s when non-null; work: nq·C floats.
cudaError_t launch_attend_rows(const float* K, const float* V, int64_t C, int d, const float* q, int nq, float scale,
                               float cap, float* logits, float* work, float* out, cudaStream_t s);

}  // namespace kvb::codecs::kvcar_gpu
