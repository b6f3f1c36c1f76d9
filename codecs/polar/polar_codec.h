#pragma once
/// polarquant (Han, Kacham, Karbasi, Mirrokni, Zandieh; arXiv 2502.02617; docs/codecs.md "polarquant"; the
/// contract ../shared/spec/codecs.md §8.2): every key and value row is preconditioned by a seeded Haar-random
/// rotation Π of its (layer, KV head, part), polar-transformed over L levels (polar_math.h), its angles coded
/// with the per-level codebooks computed from the levels' known densities and its dp/2^L remaining radii kept
/// in fp16. Keys and values use the same scheme (the paper quantizes K; the spec allows "V same scheme or
/// KIVI": kvbench uses the same scheme for both).
///
/// head_dim d not divisible by 2^L: the row is zero-padded to dp = padded_dim(d, L) before the dp×dp rotation
/// (the rotated row is a generic vector of R^dp, so the level densities hold); every padded coordinate is
/// stored and counted.
///
/// Layout (CPU and reference alike), per part p ∈ {k, v}:
///   <p>.angles         [kv_head][token][row_bytes]  packed angle codes (polar_math.h: level-major little-endian
///                                                   bitstream, zero-padded to a byte)
///   <p>.radii          [kv_head][token][dp/2^L]     binary16 (round to nearest even, saturating at ±65504)
///   <p>.rotation_seed  [kv_head] uint64             kFixed: the seed of Π (polar_math.h rotation_seed)
/// and once per layer
///   codebook           [Σ_ℓ 2^{b_ℓ}] float32        kFixed: level 1's centroids, then level 2's, ...
/// Decoding uses the stored float32 angles (cos and sin of each as float tables on the CPU and CUDA paths).
#include <memory>
#include <string>
#include <vector>

#include "codecs/polar/polar_math.h"
#include "kvb/core/codec.h"
#include "kvb/core/registry.h"

namespace kvb::codecs {

struct PolarParams {
  int levels = 4;
  std::vector<int> bits = {4, 2, 2, 2};  ///< angle bits per level, `levels` entries (level 1 first)

  void check(int head_dim) const;  ///< every head_dim is supported (zero padding); checks the bit list
  std::string label() const;       ///< e.g. "polarquant-L4-b4222"
  polar::Layout layout(int head_dim) const { return polar::make_layout(head_dim, levels, bits); }
};

const ParamTable<PolarParams>& polar_params();

std::unique_ptr<EncodedLayer> polar_encode_cpu(const PolarParams& p, int layer, const LayerKV& kv,
                                               const CodecContext& ctx);
/// The CUDA backend (polar_gpu.cpp, kernels polar_cuda.cu): the CPU layer's bytes, encoded and attended on the
/// device. Only with KVB_WITH_CUDA.
std::unique_ptr<EncodedLayer> polar_encode_cuda(const PolarParams& p, int layer, const LayerKV& kv,
                                                const CodecContext& ctx);
std::unique_ptr<EncodedLayer> polar_encode_ref(const PolarParams& p, int layer, const LayerKV& kv,
                                               const CodecContext& ctx);

/// The storage items of a layer (layout above; CPU and CUDA layers alike): its buffers' sizes.
Storage polar_storage(const polar::Layout& lay, int kv_heads, int64_t tokens);

CodecEntry polarquant_entry();

}  // namespace kvb::codecs
