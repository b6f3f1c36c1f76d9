#pragma once
/// The CUDA backend of the baseline codecs (issue 3): a layer whose compressed buffers live on the GPU, in
/// exactly the CPU layouts (so buffers() compare byte for byte), encoded by the kernels of gpu_kernels.h and
/// attended by the split-context kernel straight from those buffers. Built only with KVB_WITH_CUDA.
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

/// nq host queries qs[i][d] against KV head g of the device-resident cache `L` in one launch of the
/// split-context kernel: o [nq][d] (host), and when `logits` is set its [nq][L.C] logits (host; softcap
/// applied, without RowClasses biases). Synchronous.
void attend_view(const LayerView& L, const AttnConfig& attn, int g, const float* const* qs, int nq, float* o,
                 float* logits);

/// Device timing of one launch attending every query of `q` (query head h reads KV head h / group) against
/// `L`, with CUDA events (cuda::time_events); fills the attend fields and `device` of `out`.
void time_attend_view(const LayerView& L, const AttnConfig& attn, const LayerQueries& q, int min_repeats,
                      double min_time_s, DeviceTimes* out);

/// Uploads `kv`, encodes it on the GPU as `spec` says and returns the device-resident layer.
/// Throws RuntimeError (exit 4) when no device is usable or memory runs out.
std::unique_ptr<EncodedLayer> encode_on_gpu(const LayerSpec& spec, const LayerKV& kv, const CodecContext& ctx);

}  // namespace kvb::codecs::gpu
