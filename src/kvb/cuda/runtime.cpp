#include "kvb/cuda/runtime.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "kvb/core/error.h"
#include "kvb/run/device_api.h"

namespace kvb::cuda {

void check(cudaError_t st, const char* what) {
  if (st == cudaSuccess) return;
  cudaGetLastError();  // clear a non-sticky error so later calls report their own
  if (st == cudaErrorMemoryAllocation)
    throw RuntimeError(fmt::format("CUDA out of device memory in {}", what));
  throw RuntimeError(fmt::format("CUDA error in {}: {} ({})", what, cudaGetErrorString(st), cudaGetErrorName(st)));
}

void require_device() {
  int n = 0;
  const cudaError_t st = cudaGetDeviceCount(&n);
  if (st != cudaSuccess || n == 0) {
    cudaGetLastError();
    throw RuntimeError(fmt::format("no usable CUDA device ({})",
                                   st != cudaSuccess ? cudaGetErrorString(st) : "cudaGetDeviceCount returned 0"));
  }
  check(cudaSetDevice(0), "cudaSetDevice(0)");
}

DeviceBuffer::~DeviceBuffer() {
  if (p_) cudaFree(p_);
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (p_) cudaFree(p_);
    p_ = o.p_, n_ = o.n_;
    o.p_ = nullptr, o.n_ = 0;
  }
  return *this;
}

void DeviceBuffer::alloc(size_t bytes) {
  if (p_) cudaFree(p_);
  p_ = nullptr, n_ = 0;
  if (bytes == 0) return;
  check(cudaMalloc(&p_, bytes), "cudaMalloc");
  n_ = bytes;
}

void DeviceBuffer::upload(const void* host, size_t bytes, cudaStream_t s) {
  KVB_ASSERT(bytes <= n_);
  if (bytes == 0) return;
  check(cudaMemcpyAsync(p_, host, bytes, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync(host->device)");
  check(cudaStreamSynchronize(s), "cudaStreamSynchronize after upload");
}

void DeviceBuffer::download(void* host, size_t bytes, cudaStream_t s) const {
  KVB_ASSERT(bytes <= n_);
  if (bytes == 0) return;
  check(cudaMemcpyAsync(host, p_, bytes, cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync(device->host)");
  check(cudaStreamSynchronize(s), "cudaStreamSynchronize after download");
}

void DeviceBuffer::zero(cudaStream_t s) {
  if (n_) check(cudaMemsetAsync(p_, 0, n_, s), "cudaMemsetAsync");
}

std::vector<uint8_t> DeviceBuffer::to_host() const {
  std::vector<uint8_t> h(n_);
  download(h.data(), n_);
  return h;
}

Stream::Stream() { check(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), "cudaStreamCreate"); }
Stream::~Stream() {
  if (s_) cudaStreamDestroy(s_);
}
void Stream::sync() const { check(cudaStreamSynchronize(s_), "cudaStreamSynchronize"); }

cudaStream_t run_stream() {
  static Stream* s = [] {
    require_device();
    return new Stream();  // lives for the process: destroying it at exit would race the CUDA runtime's teardown
  }();
  return s->get();
}

std::string device_label() {
  int dev = 0;
  cudaDeviceProp p{};
  if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&p, dev) != cudaSuccess) {
    cudaGetLastError();
    return "cuda";
  }
  return fmt::format("cuda:{} {}", dev, p.name);
}

namespace {
struct Event {
  cudaEvent_t e = nullptr;
  Event() { check(cudaEventCreate(&e), "cudaEventCreate"); }
  ~Event() {
    if (e) cudaEventDestroy(e);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
};
}  // namespace

EventTiming time_events(const std::function<void(cudaStream_t)>& launch, cudaStream_t s, int min_repeats,
                        double min_time_s) {
  Event a, b;
  launch(s);  // warm-up (first-launch costs, caches)
  check(cudaStreamSynchronize(s), "warm-up launch");
  std::vector<double> t;
  double total = 0;
  while (static_cast<int>(t.size()) < std::max(1, min_repeats) || total < min_time_s) {
    check(cudaEventRecord(a.e, s), "cudaEventRecord");
    launch(s);
    check(cudaEventRecord(b.e, s), "cudaEventRecord");
    check(cudaEventSynchronize(b.e), "timed launch");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a.e, b.e), "cudaEventElapsedTime");
    t.push_back(ms * 1e-3);
    total += ms * 1e-3;
    if (t.size() > 100000) break;
  }
  std::sort(t.begin(), t.end());
  EventTiming r;
  r.samples = static_cast<int>(t.size());
  r.median_s = t[t.size() / 2];
  r.p95_s = t[std::min(t.size() - 1, static_cast<size_t>(std::ceil(0.95 * static_cast<double>(t.size()))) - 1)];
  return r;
}

double copy_bandwidth(size_t bytes, int repeats) {
  require_device();
  DeviceBuffer src(bytes), dst(bytes);
  Stream s;
  src.zero(s.get());
  const EventTiming t = time_events(
      [&](cudaStream_t st) {
        check(cudaMemcpyAsync(dst.as<void>(), src.as<void>(), bytes, cudaMemcpyDeviceToDevice, st), "cudaMemcpyAsync");
      },
      s.get(), repeats, 0.2);
  return t.median_s > 0 ? 2.0 * static_cast<double>(bytes) / t.median_s : 0.0;
}

double device_copy_bandwidth(size_t bytes, std::string* error) {
  try {
    return copy_bandwidth(bytes, 10);
  } catch (const std::exception& e) {
    if (error) *error = e.what();
    return 0;
  }
}

}  // namespace kvb::cuda
