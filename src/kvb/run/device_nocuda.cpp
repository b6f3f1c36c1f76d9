// CPU-only builds: no CUDA runtime is linked, so no device is ever usable.
#ifndef KVB_WITH_CUDA
#include "kvb/run/device_api.h"

namespace kvb::cuda {

int device_count(std::string* error) {
  if (error) *error = "this kvbench was built without the CUDA backend (nvcc not found, or KVB_ENABLE_CUDA=OFF)";
  return 0;
}

bool device_properties(int, GpuProperties*, std::string* error) {
  if (error) *error = "this kvbench was built without the CUDA backend";
  return false;
}

double device_copy_bandwidth(size_t, std::string* error) {
  if (error) *error = "this kvbench was built without the CUDA backend";
  return 0;
}

}  // namespace kvb::cuda
#endif
