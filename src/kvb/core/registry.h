#pragma once
/// The codec registry: one explicit list (codecs/register_all.cpp), `kvbench list`, budgets and presets.
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kvb/core/codec.h"
#include "kvb/core/params.h"

namespace kvb {

/// One point of a codec's budget grid: its knobs (a partial parameter object) and its exact b_eff
/// (bits per element, K and V together, per-token and per-group metadata included; docs/metrics.md §6).
struct Candidate {
  Json params;
  double bits = 0;
};

struct CodecInfo {
  std::string name;     ///< registry key, e.g. "int"
  std::string family;   ///< e.g. "scalar_quantization"
  std::string summary;  ///< one line for `kvbench list`
  std::string paper;    ///< citation (arXiv id) or "baseline"
  std::string budget_rule;  ///< how `bits` maps to the parameters, one or two sentences
  std::vector<ParamSpec> params;
  std::vector<std::pair<std::string, Json>> presets;  ///< name -> parameter object
  std::vector<std::string> backends = {"cpu"};        ///< implemented backends ("cuda" added by add() when make_cuda is set)
  bool trainable = false;       ///< needs fit() on calibration data
  bool defines_scores = true;   ///< has logits ŝ (spearman, kl, topk, score_rel_err apply)
  bool selects_tokens = false;  ///< drops or merges tokens (mass_lost applies)
  bool needs_obs_queries = false;  ///< encode reads LayerKV::obs (the prompt's observation queries); a dataset
                                   ///< without them gives a skipped cell saying so
  std::string notes;            ///< caveats shown by `kvbench list`
};

using CodecFactory = std::function<std::unique_ptr<Codec>(const Json& params, const ModelShape& shape)>;

struct CodecEntry {
  CodecInfo info;
  /// The budget grid at this head_dim. Among equal b_eff the first listed wins (list the paper default first).
  std::function<std::vector<Candidate>(int head_dim)> candidates;
  /// Human label of a resolved parameter object, e.g. "int4-g32".
  std::function<std::string(const Json& params)> label;
  /// The CPU implementation (the one `run` uses). Throws Unsupported when params do not fit the shape.
  CodecFactory make_cpu;
  /// The naive, independent reference (tests compare make_cpu against it).
  CodecFactory make_ref;
  /// The CUDA implementation (device-resident layers), set only in builds with the CUDA backend
  /// (KVB_WITH_CUDA); empty otherwise. Tests and `kvbench selftest` compare it with make_cpu.
  CodecFactory make_cuda;
  /// The parameter objects `kvbench selftest` checks (each at every shape it runs): the defaults unless the
  /// entry names the variants whose code paths differ (formats, code widths).
  std::vector<Json> selftest_variants = {Json::object()};
};

class CodecRegistry {
 public:
  void add(CodecEntry e);
  const CodecEntry* find(const std::string& name) const;
  const CodecEntry& at(const std::string& name) const;  ///< throws UsageError listing the registered names
  const std::vector<CodecEntry>& all() const { return entries_; }
  std::string names() const;  ///< comma separated

 private:
  std::vector<CodecEntry> entries_;
};

/// Defined in codecs/register_all.cpp: the one list of every codec.
void register_all_codecs(CodecRegistry& r);

/// The process-wide registry, filled on first use. Defined beside the list in codecs/register_all.cpp
/// (kvb_codecs), so the core library has no link-time dependency on the codecs.
const CodecRegistry& registry();

/// A budget as given in a config: bits per element, bytes per token (per KV head, K+V), or a
/// compression ratio against float16. All resolve to a target b_eff.
struct Budget {
  enum class Kind { kBits, kBytesPerToken, kRatio } kind = Kind::kBits;
  double value = 0;
  double target_bits(int head_dim) const;
  std::string describe() const;  ///< e.g. "bits=5", "ratio=4"
};

/// The outcome of resolving one budget for one codec at one head_dim.
struct BudgetResolution {
  bool ok = false;
  Json params;              ///< resolved, defaults filled (when ok)
  double candidate_bits = 0;  ///< the chosen candidate's b_eff
  std::string reason;       ///< why nothing fits (when !ok)
};

/// Take the candidate with the largest b_eff not above the target; explicit params override the
/// candidate's knobs. `where` names the config location for messages.
BudgetResolution resolve_budget(const CodecEntry& entry, double target_bits, const Json& explicit_params,
                                int head_dim, const std::string& where);

/// Resolve a named preset (throws UsageError listing the presets when unknown).
Json resolve_preset(const CodecEntry& entry, const std::string& preset, const Json& explicit_params,
                    const std::string& where);

/// JSON description of one entry (used by `kvbench list --json` and results provenance).
Json describe(const CodecEntry& e, int head_dim_for_grid = 128);

}  // namespace kvb
