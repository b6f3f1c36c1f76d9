#pragma once
/// Registry entries of the one-bit sketch codecs (family one_bit_sketch; codecs.md §1, §3).
#include "kvb/core/registry.h"

namespace kvb::codecs {

CodecEntry qjl_entry();  ///< codecs/sketch: QJL (sign bits of a JL projection, masked-sum scores)
CodecEntry h1b_entry();  ///< codecs/sketch: H1B-KV (symmetric sign sketch, XOR/popcount scores)

/// CUDA backends (codecs/sketch/*_gpu.cpp), defined only in builds with KVB_WITH_CUDA.
std::unique_ptr<Codec> qjl_make_cuda(const Json& params, const ModelShape& shape);
std::unique_ptr<Codec> h1b_make_cuda(const Json& params, const ModelShape& shape);

}  // namespace kvb::codecs
