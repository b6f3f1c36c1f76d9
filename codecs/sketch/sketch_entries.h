#pragma once
/// Registry entries of the one-bit sketch codecs (family one_bit_sketch; docs/codecs.md §7, §8).
#include "kvb/core/registry.h"

namespace kvb::codecs {

CodecEntry qjl_entry();  ///< codecs/sketch: QJL (sign bits of a JL projection, masked-sum scores)
CodecEntry h1b_entry();  ///< codecs/sketch: H1B-KV (symmetric sign sketch, XOR/popcount scores)

}  // namespace kvb::codecs
