#pragma once
/// `kvbench inspect`: per-layer statistics of a kvdump — the properties that make KV compression hard
/// (docs/dump-format.md §3): key/value norm spread, outlier channels, attention entropy, sink mass — plus the
/// ref_out self-check. Every attention number comes from the exact float64 reference (docs/protocol.md §1).
#include <cstdint>
#include <optional>
#include <vector>

#include "kvb/core/params.h"  // Json
#include "kvb/io/kvdump.h"

namespace kvb {

struct InspectOptions {
  int64_t max_queries = 16;   ///< recorded queries per head and sequence used for attention stats (<= 0: all)
  int64_t max_sequences = 0;  ///< sequences used (<= 0: all)
};

/// A per-head quantity summarized over the heads of a layer.
struct HeadRange {
  double mean = 0, min = 0, max = 0;
};

/// Token norms over the C context tokens: min over heads of the per-head minimum, mean over heads of
/// the per-head median, max over heads of the per-head maximum; `ratio` is the per-head max/median.
struct NormSpread {
  double min = 0, median = 0, max = 0;
  HeadRange ratio;
};

struct OutlierChannel {
  int kv_head = 0;
  int channel = 0;
  double ratio = 0;  ///< channel RMS over tokens / median channel RMS of that head (mean over sequences)
};

struct LayerStats {
  int layer = 0;
  NormSpread key_norm, value_norm;
  std::vector<OutlierChannel> top_outliers;  ///< the 4 (KV head, channel) with the largest ratio
  HeadRange outlier_ratio;  ///< per KV head: its largest channel RMS / median channel RMS
  HeadRange entropy;        ///< per query head: mean attention entropy (nats) over the C context tokens
  HeadRange sink_mass;      ///< per query head: mean attention probability on token 0
  std::optional<double> ref_max_rel_err;  ///< max ‖o − ref_out‖ / ‖ref_out‖ when the dump has ref_out
};

struct DumpStats {
  int64_t queries_per_head = 0;  ///< queries per head and sequence actually used (smallest over sequences)
  int sequences_used = 0;
  std::vector<LayerStats> layers;
};

/// Reads every layer of the selected sequences (one layer in memory at a time). Throws DataError on
/// bad data (e.g. NaN in a tensor), like the reader.
DumpStats inspect_dump(const KvDumpReader& reader, const InspectOptions& opts = {});

/// The dump's attributes, dtype and sequences as JSON (each sequence with its observation-query window W
/// and position range, or null: docs/dump-format.md §1.2).
Json dump_summary_json(const KvDumpReader& reader);
Json to_json(const DumpStats& stats);

}  // namespace kvb
