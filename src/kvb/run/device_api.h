#pragma once
/// Host-side view of the CUDA runtime (implemented in src/kvb/cuda/*.cu when built with CUDA,
/// and by a CPU-only fallback otherwise). No CUDA types cross this header.
#include <cstddef>
#include <string>

namespace kvb::cuda {

struct GpuProperties {
  std::string name;
  int sm_count = 0;
  int cc_major = 0, cc_minor = 0;
  unsigned long long global_mem_bytes = 0;
  int l2_bytes = 0;
  int driver_version = 0;   ///< e.g. 12080 = 12.8
  int runtime_version = 0;
};

/// Number of usable CUDA devices (0 without a device, a driver, or a CUDA build); `error` gets why.
int device_count(std::string* error);
bool device_properties(int ordinal, GpuProperties* out, std::string* error);
/// Device-to-device copy bandwidth of device 0 in bytes/s (read + write), median over repeats of a
/// `bytes` copy; 0 with `error` set when no device is usable.
double device_copy_bandwidth(size_t bytes, std::string* error);

}  // namespace kvb::cuda
