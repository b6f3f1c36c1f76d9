#pragma once
/// The CUDA backend of the baseline codecs (issue 3): a layer whose compressed buffers live on the GPU, in
/// exactly the CPU layouts (so buffers() compare byte for byte), encoded by the kernels of gpu_kernels.h and
/// attended by the split-context kernel straight from those buffers. Built only with KVB_WITH_CUDA.
#include <cuda_runtime_api.h>

#include <functional>
#include <memory>
#include <string>

#include "codecs/common/gpu_view.h"
#include "kvb/core/codec.h"

namespace kvb::codecs::gpu {

/// How one of K or V is stored (names are the CPU layer's StorageItem names; empty = not stored).
struct PartSpec {
  Fmt fmt = Fmt::kF16;
  int bits = 0, group = 0;
  int64_t q_tokens = 0;  ///< per head
  std::string codes_name, sm_name, scale_name, tail_name;
  StorageKind tail_kind = StorageKind::kBuffer;
};

struct LayerSpec {
  PartSpec k, v;
  double nominal_bytes_per_token = 0;
};

/// One attention launch over queries already on the device: the arguments every split-context kernel takes.
struct QueryLaunch {
  const float* q = nullptr;     ///< [nq][d]
  const int* q_head = nullptr;  ///< [nq] KV head of each query
  int nq = 0;
  float* out = nullptr;     ///< [nq][d]
  float* logits = nullptr;  ///< [nq][C] or nullptr
  float* work = nullptr;    ///< plan()'s floats
  int chunk = 0, splits = 0;
};

/// How a device-resident layer attends: plan(nq, &chunk, &splits) returns the work floats its kernels need,
/// launch(args, stream) enqueues them. The drivers below do the rest (queries to the device, buffers,
/// results back, event timing) for every device layer.
struct DeviceAttend {
  int d = 0;
  int64_t C = 0;  ///< logits per query
  std::function<int64_t(int nq, int* chunk, int* splits)> plan;
  std::function<cudaError_t(const QueryLaunch&, cudaStream_t)> launch;
  const char* what = "attend kernel";  ///< for error messages
};

/// nq host queries qs[i][d] against KV head g: o [nq][d] (host), and when `logits` is set its [nq][C]
/// logits (host). Synchronous.
void attend_device(const DeviceAttend& a, int g, const float* const* qs, int nq, float* o, float* logits);

/// attend_device's output for a GQA group: outs[i] (host) for the nq host queries qs against KV head g.
void attend_many_device(const DeviceAttend& a, int g, const float* const* qs, int nq, float* const* outs);

/// s[t] (host, C logits) of one host query against KV head g (the output is computed and dropped).
void scores_device(const DeviceAttend& a, int g, const float* q, float* s);

/// The encode timing of every device layer: uploads kv's K and V once and times `encode(k, v, stream)` with
/// CUDA events (re-encoding the same cache into the layer's own buffers writes identical bytes: the encoders
/// are deterministic); fills the encode fields of `out`.
void time_encode_device(const LayerKV& kv, const std::function<void(const float*, const float*, cudaStream_t)>& encode,
                        int min_repeats, double min_time_s, DeviceTimes* out);

/// Device timing of one launch attending every query of `q` (query head h reads KV head h / group) with
/// CUDA events (cuda::time_events); fills the attend fields and `device` of `out`.
void time_attend_device(const DeviceAttend& a, int kv_heads, const LayerQueries& q, int min_repeats,
                        double min_time_s, DeviceTimes* out);

/// The baselines' split-context kernel (launch_attend) over the cache `L` (logits without RowClasses biases).
DeviceAttend baseline_attend(const LayerView& L, const AttnConfig& attn);

/// Uploads `kv`, encodes it on the GPU as `spec` says and returns the device-resident layer.
/// Throws RuntimeError (exit 4) when no device is usable or memory runs out.
std::unique_ptr<EncodedLayer> encode_on_gpu(const LayerSpec& spec, const LayerKV& kv, const CodecContext& ctx);

}  // namespace kvb::codecs::gpu
