#pragma once
/// Registry entries of the baseline codecs (docs/codecs.md §5, §4; docs/codecs.md §1).
#include "kvb/core/registry.h"

namespace kvb::codecs {

CodecEntry fp16_entry();  ///< codecs/fp16: the float16 cache, exact attention (reference row of throughput)
CodecEntry fp8_entry();   ///< codecs/fp8: OCP FP8 E4M3 / E5M2 codes with a per-head scale
CodecEntry int_entry();   ///< codecs/quant: per-token asymmetric INTn with channel groups
CodecEntry kivi_entry();  ///< codecs/quant: KIVI (per-channel keys, per-token values, fp16 residual)

}  // namespace kvb::codecs
