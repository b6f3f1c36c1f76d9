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

/// The baselines' split-context kernel (launch_attend) over the cache `L` (logits without RowClasses biases).
kernels::gpu::DeviceAttend baseline_attend(const kernels::gpu::LayerView& L, const AttnConfig& attn);

/// Uploads `kv`, encodes it on the GPU as `spec` says and returns the device-resident layer.
/// Throws RuntimeError (exit 4) when no device is usable or memory runs out.
std::unique_ptr<EncodedLayer> encode_on_gpu(const LayerSpec& spec, const LayerKV& kv, const CodecContext& ctx);

}  // namespace kvb::codecs::gpu
