#pragma once
/// The state of a run, kept apart by kind: what the plan decided (DatasetPlan, CellPlan), the live codec
/// objects of a cell under evaluation (CellLive), what the evaluation accumulates (CellAccum, DatasetAccum),
/// and how a cell stands (Outcome). plan.h fills the plan, evaluate.h the accumulators, record.h turns
/// them into the results records of report/results.h.
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kvb/core/codec.h"
#include "kvb/core/hash.h"
#include "kvb/core/registry.h"
#include "kvb/io/kvdump.h"
#include "kvb/report/results.h"
#include "kvb/run/config.h"

namespace kvb::run {

/// The start value of the run's FNV-1a (core/hash.h) for the run key and the per-cell seeds
/// (derive_seed(seed, fnv1a(label))). It is one digit short of FNV's offset basis 14695981039346656037 — the
/// value these hashes were first defined with. Kept: every seeded codec's results derive from it.
inline constexpr uint64_t kRunHashStart = 1469598103934665603ull;

/// FNV-1a of a string from kRunHashStart: the run key and the per-cell seed.
inline uint64_t run_hash(std::string_view s) { return fnv1a(s, kRunHashStart); }

/// One dataset of the config, opened, with the sequences and layers the run uses.
struct DatasetPlan {
  const DatasetSpec* spec = nullptr;
  std::unique_ptr<KvDumpReader> reader;
  std::vector<size_t> eval_seqs;
  std::vector<size_t> calib_seqs;
  std::vector<int> layers;
};

/// One cell of the expansion dataset × codecs[] entry × budget, as resolved before any data is read.
struct CellPlan {
  size_t dataset = 0;
  size_t index = 0;      ///< position in the full expansion (cells/<index>.json, --shard)
  size_t spec_idx = 0;   ///< the codecs[] entry it came from (one batch per entry and dataset)
  bool selected = true;  ///< in this run's shard
  const CodecEntry* entry = nullptr;
  const CodecSpec* spec = nullptr;
  std::optional<Budget> budget;
  double bits_target = std::nan("");
  double candidate_bits = std::nan("");
  Json params;
  std::string label;
  std::string device = "cpu";
};

/// How a cell stands: ok until a step fails ("skipped" when the codec cannot run this configuration).
struct Outcome {
  CellStatus status = CellStatus::kOk;
  std::string reason;
  bool ok() const { return status == CellStatus::kOk; }
  void set(CellStatus s, std::string why) {
    status = s;
    reason = std::move(why);
  }
};

/// The codec objects of a cell while it is evaluated.
struct CellLive {
  std::unique_ptr<Codec> codec;
  std::unique_ptr<EncodedLayer> prev;  ///< previous layer of the current sequence (cross-layer codecs)
};

/// Storage means over the evaluated (sequence, layer) pairs, per KV head.
struct StorageAcc {
  double bytes_per_token = 0, buffer_bytes = 0, fixed_bytes = 0, bits_with_fixed = 0;
  double bits_k = 0, bits_v = 0;
  bool split_known = true;  ///< every compressed item is named "k.*" or "v.*"
  bool nominal_used = false;
  int64_t n = 0;
  std::optional<std::vector<StorageItemRecord>> items;  ///< breakdown of the first evaluated (sequence, layer)
};

/// What evaluating a cell accumulates.
struct CellAccum {
  std::map<std::string, std::vector<double>> values;  ///< per-query metric values
  std::map<int, std::map<std::string, std::vector<double>>> per_layer;
  std::map<int, StorageAcc> per_layer_storage;
  std::map<std::string, std::string> not_applicable;  ///< metric (or note) -> reason
  StorageAcc storage;
  std::optional<ThroughputRecord> throughput;
  std::optional<CalibrationRecord> calibration;
};

struct Cell {
  CellPlan plan;
  Outcome outcome;
  CellLive live;
  CellAccum acc;
  std::optional<CellRecord> record;  ///< the finished record (computed or resumed)
};

/// What the dataset pass (the first evaluation over a dataset) accumulates.
struct DatasetAccum {
  double ref_max_err = 0;
  std::vector<double> ref_errs;
  bool ref_checked = false;
  int64_t ref_skipped_sliding = 0;
  std::optional<ThroughputRecord> reference_throughput;       ///< exact fp16 attention on the CPU
  std::optional<ThroughputRecord> reference_throughput_cuda;  ///< and on the GPU, when cells ran there
};

/// The pending cells of one codecs[] entry on one dataset: one pass over the dataset's data.
struct Batch {
  size_t dataset = 0;
  std::vector<Cell*> cells;
  bool streams = false;  ///< evaluates data (has an ok cell or must compute the dataset record)
};

}  // namespace kvb::run
