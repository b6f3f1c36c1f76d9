// The CUDA emulator's own semantics (src/kvb/cuda/emu; label gpu). The parity suite trusts the emulator to run
// kernels the way a GPU does, so its thread indexing, barriers, warp shuffles and the faults it must report
// are tested here with small kernels written in this file. Built into every build; without KVB_CUDA_EMULATE the
// suite is one skipping test (nvcc builds compile test .cpp files with the host compiler: no kernels there).
#include <gtest/gtest.h>

#if defined(KVB_CUDA_EMULATED)
#include <cuda_runtime.h>

#include <set>
#include <tuple>
#include <vector>

#include "kvb/cuda/kernel.h"
#include "kvb/cuda/runtime.h"

namespace {

using kvb::cuda::DeviceBuffer;

template <class T>
std::vector<T> download(const DeviceBuffer& b) {
  std::vector<T> h(b.bytes() / sizeof(T));
  b.download(h.data(), b.bytes());
  return h;
}

__global__ void coords(int* out) {
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  int* o = out + 6 * (b * blockDim.x * blockDim.y * blockDim.z + t);
  o[0] = threadIdx.x, o[1] = threadIdx.y, o[2] = threadIdx.z;
  o[3] = blockIdx.x, o[4] = blockIdx.y, o[5] = blockIdx.z;
}

TEST(EmuRuntime, EveryThreadOfAThreeDimensionalGridRunsOnceWithItsCoordinates) {
  const dim3 grid(3, 2, 2), block(5, 4, 3);  // 60 threads: two warps, the second partial
  const int n = 12 * 60;
  DeviceBuffer out(sizeof(int) * 6 * n);
  KVB_LAUNCH(grid, block, 0, nullptr, coords)(out.as<int>());
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const auto h = download<int>(out);
  std::set<std::tuple<int, int, int, int, int, int>> seen;
  for (int i = 0; i < n; ++i) {
    const int* o = &h[6 * i];
    ASSERT_LT(o[0], 5);
    ASSERT_LT(o[1], 4);
    ASSERT_LT(o[2], 3);
    ASSERT_LT(o[3], 3);
    ASSERT_LT(o[4], 2);
    ASSERT_LT(o[5], 2);
    seen.insert({o[0], o[1], o[2], o[3], o[4], o[5]});
  }
  EXPECT_EQ(static_cast<int>(seen.size()), n);
}

__global__ void shuffles(int n, int* out) {
  const int t = threadIdx.x;
  out[0 * n + t] = __shfl_xor_sync(0xffffffffu, t, 5);
  out[1 * n + t] = __shfl_down_sync(0xffffffffu, t, 3);
  out[2 * n + t] = __shfl_up_sync(0xffffffffu, t, 3);
  out[3 * n + t] = __shfl_sync(0xffffffffu, t, 7);
  out[4 * n + t] = __shfl_xor_sync(0xffffffffu, t, 4, 8);  // width 8: within octets
  out[5 * n + t] = __shfl_down_sync(0xffffffffu, t, 2, 8);
  int s = t;
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  out[6 * n + t] = s;
  const double x = 0.5 * t;  // 8-byte values travel whole
  out[7 * n + t] = static_cast<int>(2 * __shfl_sync(0xffffffffu, x, (t + 1) & 31));
}

TEST(EmuRuntime, WarpShufflesFollowCudaSemantics) {
  const int n = 64;
  DeviceBuffer out(sizeof(int) * 8 * n);
  KVB_LAUNCH(1, n, 0, nullptr, shuffles)(n, out.as<int>());
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const auto h = download<int>(out);
  for (int t = 0; t < n; ++t) {
    SCOPED_TRACE(t);
    const int lane = t & 31, w = t - lane;
    EXPECT_EQ(h[0 * n + t], w + (lane ^ 5));
    EXPECT_EQ(h[1 * n + t], lane + 3 < 32 ? t + 3 : t);  // out of range: own value
    EXPECT_EQ(h[2 * n + t], lane >= 3 ? t - 3 : t);
    EXPECT_EQ(h[3 * n + t], w + 7);
    EXPECT_EQ(h[4 * n + t], t ^ 4);
    EXPECT_EQ(h[5 * n + t], (lane & 7) + 2 < 8 ? t + 2 : t);
    EXPECT_EQ(h[6 * n + t], 32 * w + 31 * 32 / 2);  // Σ over the warp of t
    EXPECT_EQ(h[7 * n + t], w + ((lane + 1) & 31));
  }
}

/// Thread t publishes t in shared memory and reads its neighbour's value, with or without a barrier between.
__global__ void neighbour(int with_barrier, int* out) {
  KVB_DYNAMIC_SHARED(int, sh);
  const int t = threadIdx.x, n = blockDim.x;
  sh[t] = t;
  if (with_barrier) __syncthreads();
  out[blockIdx.x * n + t] = sh[(t + 1) % n];
}

TEST(EmuRuntime, BarriersOrderSharedMemoryAndAMissingBarrierShows) {
  const int n = 96, blocks = 2;
  DeviceBuffer out(sizeof(int) * n * blocks);
  KVB_LAUNCH(blocks, n, n * sizeof(int), nullptr, neighbour)(1, out.as<int>());
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  auto h = download<int>(out);
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < n; ++t) ASSERT_EQ(h[b * n + t], (t + 1) % n) << "block " << b << " thread " << t;
  // Without the barrier, even blocks run threads in order (a thread reads before its neighbour wrote: the
  // poisoned -1) and odd blocks in reverse (it reads after): the race is visible, whatever real GPUs would do.
  KVB_LAUNCH(blocks, n, n * sizeof(int), nullptr, neighbour)(0, out.as<int>());
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  h = download<int>(out);
  int stale = 0;
  for (int t = 0; t < n; ++t) stale += h[t] != (t + 1) % n;
  EXPECT_GT(stale, n / 2);
  for (int t = 0; t + 1 < n; ++t) EXPECT_EQ(h[n + t], t + 1);  // the last thread ran first: it read poison
  EXPECT_EQ(h[n + n - 1], -1);
}

__global__ void divergent(int* out) {
  if ((threadIdx.x & 31) < 16)
    __syncthreads();
  else
    __syncwarp();
  out[threadIdx.x] = 1;
}

TEST(EmuRuntime, DivergentBarriersAreAKernelFault) {
  DeviceBuffer out(sizeof(int) * 64);
  KVB_LAUNCH(1, 64, 0, nullptr, divergent)(out.as<int>());
  EXPECT_EQ(cudaStreamSynchronize(nullptr), cudaErrorLaunchFailure);
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure) << "a fault is sticky";
  kvb::emu::clear_fault();
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

__global__ void touch(int* out) { out[threadIdx.x] = static_cast<int>(threadIdx.x); }

TEST(EmuRuntime, HostPointerArgumentIsAnIllegalAddress) {
  std::vector<int> host(32);
  KVB_LAUNCH(1, 32, 0, nullptr, touch)(host.data());
  EXPECT_EQ(cudaGetLastError(), cudaErrorIllegalAddress);
  EXPECT_EQ(host[5], 0) << "the kernel must not have run";
  kvb::emu::clear_fault();
}

TEST(EmuRuntime, LaunchConfigurationsAreCheckedAsOnAGpu) {
  DeviceBuffer out(sizeof(int) * 2048);
  KVB_LAUNCH(1, 1025, 0, nullptr, touch)(out.as<int>());
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "configuration errors are not sticky";
  KVB_LAUNCH(dim3(1, 65536), 32, 0, nullptr, touch)(out.as<int>());
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  // Dynamic shared memory above 48 KB needs the opt-in attribute, and at most 227 KB even then.
  KVB_LAUNCH(1, 32, 64 << 10, nullptr, touch)(out.as<int>());
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  ASSERT_EQ(cudaFuncSetAttribute(touch, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 << 10), cudaSuccess);
  KVB_LAUNCH(1, 32, 64 << 10, nullptr, touch)(out.as<int>());
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(cudaFuncSetAttribute(touch, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 << 10),
            cudaErrorInvalidValue);
  cudaGetLastError();
}

TEST(EmuRuntime, CopiesOutsideAnAllocationFailAndFreshMemoryIsPoisoned) {
  DeviceBuffer b(100);
  const auto h = download<unsigned char>(b);
  for (unsigned char c : h) ASSERT_EQ(c, 0xFF);
  std::vector<unsigned char> big(101, 0);
  EXPECT_EQ(cudaMemcpyAsync(b.as<void>(), big.data(), 101, cudaMemcpyHostToDevice, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpyAsync(big.data(), b.as<unsigned char>() + 1, 100, cudaMemcpyDeviceToHost, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemsetAsync(big.data(), 0, 10, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cudaFree(big.data()), cudaErrorInvalidValue);
  cudaGetLastError();
  EXPECT_EQ(cudaMemcpyAsync(big.data(), b.as<void>(), 100, cudaMemcpyDeviceToHost, nullptr), cudaSuccess);
}

}  // namespace

#else

TEST(EmuRuntime, NotAnEmulatedBuild) {
  GTEST_SKIP() << "the CUDA emulator's tests run in builds configured with -DKVB_CUDA_EMULATE=ON "
                  "(scripts/test.sh builds one in build-emu)";
}

#endif
