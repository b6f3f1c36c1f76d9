#pragma once
/// The host drivers of every split-context attention kernel (the baselines' in kernels/cuda/attend.cu and the
/// codec families' own): a device-resident layer describes how it attends (DeviceAttend: plan + launch), and
/// these functions do the rest — queries to the device, work buffers, results back, CUDA-event timing.
/// Built only with the CUDA backend (KVB_WITH_CUDA).
#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>

#include "kernels/cuda/launch.h"
#include "kvb/core/codec.h"

namespace kvb::kernels::gpu {

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

/// A codec family's split-context launch arguments (launch.h SplitAttend) from the drivers' QueryLaunch and the
/// layer's logit transform.
inline SplitAttend split_attend(const QueryLaunch& ql, const AttnConfig& attn) {
  SplitAttend a;
  a.q = ql.q, a.q_head = ql.q_head, a.nq = ql.nq;
  a.out = ql.out, a.logits = ql.logits, a.work = ql.work;
  a.chunk = ql.chunk, a.splits = ql.splits;
  a.softmax_scale = attn.softmax_scale, a.softcap = attn.softcap;
  return a;
}

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

}  // namespace kvb::kernels::gpu
