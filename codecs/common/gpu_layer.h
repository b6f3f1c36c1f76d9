#pragma once
/// The CUDA backend of the baseline codecs (issue 3): a layer whose compressed buffers live on the GPU, in
/// exactly the CPU layouts (so buffers() compare byte for byte), encoded by the kernels of kernels/cuda/launch.h and
/// attended by the split-context kernel straight from those buffers. Built only with KVB_WITH_CUDA.
#include <cuda_runtime_api.h>

#include <functional>
#include <memory>
#include <string>

#include "kernels/cuda/drivers.h"
#include "kernels/cuda/layer_view.h"
#include "kvb/core/codec.h"

namespace kvb::codecs::gpu {

/// How one of K or V is stored (names are the CPU layer's StorageItem names; empty = not stored).
struct PartSpec {
  kernels::gpu::Fmt fmt = kernels::gpu::Fmt::kF16;
  int bits = 0, group = 0;
  int64_t q_tokens = 0;  ///< per head
  std::string codes_name, sm_name, scale_name, tail_name;
  std::string block_scale_name;  ///< microscaling block scales (a kCompressed item after the codes)
  StorageKind tail_kind = StorageKind::kBuffer;
};

struct LayerSpec {
  PartSpec k, v;
  double nominal_bytes_per_token = 0;
};

/// A device-resident layer whose attention is one DeviceAttend (plan + launch) and whose encode is one
/// run_encode: scores, attend, attend_many and the CUDA-event timings of every such layer (the codec
/// families' own device layers: lookat, the sketches, turboquant) forward to the shared drivers here, once.
class DeviceLayer : public EncodedLayer {
 public:
  explicit DeviceLayer(int kv_heads) : kv_heads_(kv_heads) {}
  bool scores(int g, const float* q, float* s_out, Scratch&) const override;
  void attend(int g, const float* q, float* o_out, Scratch&) const override;
  void attend_many(int g, const float* const* qs, int nq, float* const* outs, Scratch&) const override;
  /// CUDA-event timings of a re-encode of `kv` (its cache already on the device) and of one launch attending
  /// every query of `q`.
  bool device_timing(const LayerKV& kv, const LayerQueries& q, int min_repeats, double min_time_s,
                     DeviceTimes* out) const override;

 protected:
  /// This layer's attention for the drivers (kernels/cuda/drivers.h).
  virtual kernels::gpu::DeviceAttend device_attend() const = 0;
  /// Encodes K and V (device floats [heads][C][d]) into this layer's buffers on stream s; deterministic, so a
  /// re-encode for timing writes the same bytes.
  virtual void run_encode(const float* dk, const float* dv, cudaStream_t s) const = 0;

 private:
  int kv_heads_;
};

/// The baselines' split-context kernel (launch_attend) over the cache `L` (logits without RowClasses biases).
kernels::gpu::DeviceAttend baseline_attend(const kernels::gpu::LayerView& L, const AttnConfig& attn);

/// Uploads `kv`, encodes it on the GPU as `spec` says and returns the device-resident layer.
/// Throws RuntimeError (exit 4) when no device is usable or memory runs out.
std::unique_ptr<EncodedLayer> encode_on_gpu(const LayerSpec& spec, const LayerKV& kv, const CodecContext& ctx);

}  // namespace kvb::codecs::gpu
