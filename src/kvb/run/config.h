#pragma once
/// The run config of docs/config.md: strict parsing (unknown keys, wrong JSON types and bad ranges are
/// UsageErrors naming the key and the allowed values), defaults filled in, and the cells it expands to.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kvb/core/params.h"
#include "kvb/core/registry.h"

namespace kvb {

struct DatasetSpec {
  std::string path;                   ///< resolved against the config file's directory
  std::string path_as_given;
  std::vector<std::string> sequences;  ///< ids; empty = all
  std::vector<int> layers;             ///< empty = all
  int64_t max_queries = 64;            ///< per head and sequence; 0 = all
};

/// One entry of "codecs": a codec, explicit params, and either budgets, a preset, or neither
/// (neither = the codec's defaults, one cell).
struct CodecSpec {
  std::string codec;
  Json params = Json::object();
  std::vector<Budget> budgets;
  std::string preset;
  std::string where;  ///< "codecs[3]" for messages
};

struct Config {
  std::string name;
  std::string path;  ///< the config file
  std::string dir;   ///< its directory
  std::vector<DatasetSpec> datasets;
  int calibration_sequences = -1;  ///< -1 = default: 1 when a dataset has >= 2 sequences, else 0
  std::vector<CodecSpec> codecs;
  int64_t topk = 32;
  bool kendall = false;
  std::string device = "auto";  ///< cpu | cuda | auto
  int threads = 0;               ///< 0 = all hardware threads
  uint64_t seed = 0;
  int repeats = 3;
  double min_time_s = 0.2;
  int positions_per_call = 1;  ///< CPU throughput: query positions of each query head one attend call takes
  bool throughput = true;
  Json raw;  ///< the config as given
  Json resolved() const;  ///< the config with every default filled in (written into results.json)
};

/// The strict JSON readers of the config, shared with `kvbench e2e`'s config (e2e/e2e_config.h): each
/// throws UsageError naming the key, the expected type or range, and what was found.
namespace config_json {
std::string join(const std::vector<std::string>& v);
void check_keys(const Json& obj, const std::vector<std::string>& allowed, const std::string& where);
[[noreturn]] void bad_type(const std::string& key, const char* expected, const Json& v);
const Json& require_object(const Json& v, const std::string& key);
std::string get_string(const Json& v, const std::string& key);
int64_t get_int(const Json& v, const std::string& key, int64_t lo, int64_t hi);
double get_number(const Json& v, const std::string& key, double lo, double hi);
bool get_bool(const Json& v, const std::string& key);
/// One entry of "codecs" (codec, params, bits / bytes_per_token / ratio, preset), validated against the registry.
CodecSpec parse_codec(const Json& j, const std::string& where);
/// "codecs" of a config object: a non-empty list of parse_codec entries.
std::vector<CodecSpec> parse_codecs(const Json& j);
/// The JSON of a config file and the directory its relative paths resolve against; UsageError for a
/// directory, an unreadable file or invalid JSON.
Json read_config_file(const std::string& path, std::string* dir);
/// The JSON of a config file's text (`path` for the message); UsageError for invalid JSON.
Json parse_config_text(const std::string& text, const std::string& path);
/// "name" of a config object, or the config file's stem: non-empty, no '/'.
std::string config_name(const Json& j, const std::string& path);
}  // namespace config_json

/// Parse and validate a config file. Every problem with the config itself, including a missing or
/// unparsable config file, is a UsageError (exit 2); problems with the data it names surface later as
/// DataErrors (exit 3).
Config load_config(const std::string& path);
/// Same, from an already-parsed JSON value (tests); `dir` resolves relative dataset paths.
Config parse_config(const Json& j, const std::string& path, const std::string& dir);

}  // namespace kvb
