#pragma once
/// `rotate: hadamard` for the scalar quantizers (int, kivi; issue 17 item 3): the codec's own encoder runs on
/// the rotated cache R k, R v (R = randomized blocked Hadamard, kernels/cpu/hadamard.h), and the layer scores
/// with R q and un-rotates its output, o = R^T (Σ_t p_t · R v̂_t), instead of ever un-rotating the cache. R is
/// orthogonal, so exact attention is unchanged; what changes is what the quantizer sees: outlier channels
/// spread over B channels, smaller per-group ranges.
/// Storage: the sign vector, d bits per KV head, is counted as fixed state ("rotation.signs"); one vector
/// per (layer, KV head), drawn from the run seed.
/// The CUDA layers run the same way: the cache and the queries are rotated on the host (float64
/// butterflies, rounded once, so GPU and CPU encode identical bytes), and device_timing adds the host
/// rotation time to the device's encode and attend medians (said in the codec report).
#include <functional>
#include <memory>
#include <string>

#include "kvb/core/codec.h"
#include "kvb/core/params.h"

namespace kvb::codecs {

/// The `rotate` parameter ("none" | "hadamard"), one declaration for every codec that offers it.
ParamSpec rotate_param();

/// What `kvbench list` says of the parameter (appended to a codec's notes).
inline constexpr const char* kRotateNote =
    "; rotate=hadamard: K and V stored rotated by a seeded randomized Hadamard matrix (blocks of the largest "
    "power of two dividing head_dim), queries rotated, outputs un-rotated; its d sign bits per KV head are fixed "
    "state; on CUDA the rotations run on the host and their time is added to the device timings";

/// Label suffix of a rotation: "" for none, "-rh" for hadamard.
std::string rotate_suffix(const std::string& rotate);

using LayerEncoder = std::function<std::unique_ptr<EncodedLayer>(const LayerKV&)>;

/// `encode(kv)` when rotate is "none"; else encode(R kv) wrapped so queries are rotated and outputs
/// un-rotated. `dense`: rotate with the explicit d×d matrix in float64 (the naive references) instead of
/// the butterflies (CPU and CUDA paths).
std::unique_ptr<EncodedLayer> encode_rotated(const std::string& rotate, int layer, const LayerKV& kv,
                                             const CodecContext& ctx, bool dense, const LayerEncoder& encode);

/// A codec's encode function Fn(p, kv, ctx) (P has a `rotate` member) encoding through encode_rotated, as
/// the layer-aware function FnCodec takes (the layer seeds the signs): one line per backend in an entry.
template <class P, auto Fn, bool Dense>
std::unique_ptr<EncodedLayer> rotating(const P& p, int layer, const LayerKV& kv, const CodecContext& ctx) {
  return encode_rotated(p.rotate, layer, kv, ctx, Dense, [&](const LayerKV& r) { return Fn(p, r, ctx); });
}

/// The dense rotation matrix R [d][d] (row-major, float64) for the sign vector s: the naive reference.
std::vector<double> dense_rotation(int d, const int8_t* s);

}  // namespace kvb::codecs
