// CUDA device discovery for --device and the results' environment block. Compiled only when nvcc is
// found; the host-facing declarations live in kvb/run/device.h (no CUDA types there).
#include <cuda_runtime.h>

#include <cstdio>
#include <string>
#include <vector>

#include "kvb/run/device_api.h"

namespace kvb::cuda {

int device_count(std::string* error) {
  int n = 0;
  const cudaError_t st = cudaGetDeviceCount(&n);
  if (st != cudaSuccess) {
    if (error) *error = cudaGetErrorString(st);
    cudaGetLastError();  // clear the sticky error
    return 0;
  }
  return n;
}

bool device_properties(int ordinal, GpuProperties* out, std::string* error) {
  cudaDeviceProp p{};
  const cudaError_t st = cudaGetDeviceProperties(&p, ordinal);
  if (st != cudaSuccess) {
    if (error) *error = cudaGetErrorString(st);
    cudaGetLastError();
    return false;
  }
  out->name = p.name;
  out->sm_count = p.multiProcessorCount;
  out->cc_major = p.major;
  out->cc_minor = p.minor;
  out->global_mem_bytes = static_cast<unsigned long long>(p.totalGlobalMem);
  out->l2_bytes = p.l2CacheSize;
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  out->driver_version = driver;
  out->runtime_version = runtime;
  return true;
}

}  // namespace kvb::cuda
