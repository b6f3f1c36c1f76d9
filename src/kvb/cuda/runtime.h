#pragma once
/// The CUDA runtime as kvbench uses it (issue 3): error checks that throw RuntimeError (exit 4), an owning
/// device buffer, one stream per run and CUDA-event timing. Host C++ (compiled by the host compiler against
/// cuda_runtime_api.h); only built with the CUDA backend (KVB_WITH_CUDA).
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace kvb::cuda {

/// Throws RuntimeError ("CUDA error in <what>: <reason>") unless st == cudaSuccess.
void check(cudaError_t st, const char* what);

/// Selects device 0 and fails with exit 4 when none is usable (message says why).
void require_device();

/// Owning device allocation (cudaMalloc / cudaFree); move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) { alloc(bytes); }
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void alloc(size_t bytes);  ///< frees any previous allocation; zero bytes allocates nothing
  size_t bytes() const { return n_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }
  void upload(const void* host, size_t bytes, cudaStream_t s = nullptr);    ///< synchronous w.r.t. the host
  void download(void* host, size_t bytes, cudaStream_t s = nullptr) const;  ///< synchronous
  void zero(cudaStream_t s = nullptr);
  std::vector<uint8_t> to_host() const;

  template <class T>
  static DeviceBuffer from(const std::vector<T>& v) {
    DeviceBuffer b(v.size() * sizeof(T));
    b.upload(v.data(), v.size() * sizeof(T));
    return b;
  }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

/// A non-blocking stream, destroyed with the object.
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }
  void sync() const;

 private:
  cudaStream_t s_ = nullptr;
};

/// The stream every kvbench launch goes to (one per process run), created on first use.
cudaStream_t run_stream();

/// "cuda:0 <name>" of the current device.
std::string device_label();

struct EventTiming {
  double median_s = 0, p95_s = 0;
  int samples = 0;
};

/// Times `launch(stream)` with CUDA events around each repeat (never host clocks around asynchronous work):
/// one warm-up, then repeats until `min_time_s` of device time and at least `min_repeats` samples.
EventTiming time_events(const std::function<void(cudaStream_t)>& launch, cudaStream_t s, int min_repeats,
                        double min_time_s);

/// Device-to-device copy bandwidth of this GPU, bytes/s counting read + write (2 x bytes per copy), median of
/// repeats over a `bytes`-sized buffer: the roofline `bench_gpu.sh` and `membw --device cuda` report against.
double copy_bandwidth(size_t bytes, int repeats);

}  // namespace kvb::cuda
