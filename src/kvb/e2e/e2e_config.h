#pragma once
/// The config of `kvbench e2e` (docs/e2e.md): the same `codecs`, `seed`, `threads` and `metrics.topk` as a run
/// config, and a `model` block instead of `datasets`: a llama2.c checkpoint, the text it reads, the prompt
/// length C, the continuation length N and the windows. Parsed as strictly as a run config (unknown keys,
/// wrong types and bad ranges are UsageErrors naming the key).
#include <cstdint>
#include <string>

#include "kvb/run/config.h"

namespace kvb::e2e {

/// Where the evaluated text comes from.
struct TextSpec {
  std::string format;  ///< ids (whitespace-separated token ids) | bytes (raw bytes, byte-level models) | generate
  std::string path, path_as_given;  ///< ids and bytes
  double temperature = 1.0;         ///< generate: sample each window from BOS at this temperature
  uint64_t seed = 1;                ///< generate: window w uses derive_seed(seed, {w})
};

struct ModelSpec {
  std::string checkpoint, checkpoint_as_given;
  TextSpec text;
  int prompt_len = 0;        ///< C: tokens run exactly, then compressed
  int continuation_len = 0;  ///< N: tokens decoded teacher-forced, each predicting the next one
  int windows = 0;           ///< W evaluated windows
  int calibration_windows = 1;  ///< K windows before them fit trainable codecs (never evaluated)
  int first_window = 0;         ///< index of the first calibration window in the text
  /// W: the prefill's queries of the prompt positions C-W..C-1 go to the codecs with the prompt (LayerKV::obs,
  /// for observation-window eviction: SnapKV, H2O); clamped to C; 0 = none (codecs that need them are skipped).
  int obs_window = 32;
};

struct E2eConfig {
  Config base;  ///< name, codecs, seed, threads, metrics.topk (no datasets)
  ModelSpec model;
  bool layer_metrics = true;  ///< metrics.layer: the layer-level metrics at every decode step
  int bootstrap = 2000;       ///< metrics.bootstrap: resamples of the windows for the 95% intervals
  Json resolved() const;      ///< every default filled in (results.json "config"; the run key hashes it)
};

E2eConfig load_e2e_config(const std::string& path);
E2eConfig parse_e2e_config(const Json& j, const std::string& path, const std::string& dir);

}  // namespace kvb::e2e
