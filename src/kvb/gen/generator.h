#pragma once
/// `kvbench gen`: synthetic dumps with LLM-like statistics (kvbench.md §3.3). Every knob is documented
/// here and in `kvbench gen --help`; presets fix the shapes of known models.
#include <cstdint>
#include <string>
#include <vector>

#include "kvb/core/tensor.h"
#include "kvb/io/kvdump.h"

namespace kvb {

struct GenOptions {
  std::string model_like = "tiny";  ///< preset the shapes came from (recorded as the dump's model name)
  ModelShape shape;                 ///< layers, heads, kv heads, head_dim
  int64_t tokens = 0;               ///< T per sequence (context + queries)
  int64_t queries = 0;              ///< Q recorded decode queries per sequence (the last Q tokens)
  int sequences = 2;                ///< >= 2 so one can calibrate and another evaluate
  uint64_t seed = 0;
  DType dtype = DType::kFloat16;
  std::string rope_style = "half";  ///< "half" | "interleaved" | "none"
  double rope_theta = 10000.0;
  // --- statistics knobs (the helper that implements gen documents each in generator.cpp) ---
  int outlier_channels = 4;          ///< per KV head: channels with 10-50x larger key magnitude
  double outlier_scale_min = 10, outlier_scale_max = 50;
  double sink_share_min = 0.1, sink_share_max = 0.6;  ///< per-head target attention share of token 0
  double focus_min = 0.0, focus_max = 1.0;  ///< per-head query-key alignment: 0 = broad, 1 = peaked
  double value_scale_spread = 0.5;   ///< sigma of the log-normal per-token value scale
};

/// Names of the presets: "tiny", "llama2-7b", "llama3-8b", ...
std::vector<std::string> gen_presets();
/// A preset's options (throws UsageError listing the presets when unknown).
GenOptions gen_preset(const std::string& name);
/// Write the dump (with ref_out) to `path`, atomically. Deterministic for a given options+seed.
void generate_dump(const std::string& path, const GenOptions& opts);

}  // namespace kvb
