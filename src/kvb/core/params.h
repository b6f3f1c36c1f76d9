#pragma once
/// Typed codec parameters: a declared ParamSpec list validates a JSON object of parameters, rejecting
/// unknown keys and bad types or ranges with a message that names the key and the allowed values.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kvb {

using Json = nlohmann::json;

enum class ParamType { kInt, kFloat, kBool, kString };

const char* to_string(ParamType t);

struct ParamSpec {
  std::string name;
  ParamType type = ParamType::kInt;
  Json default_value;                ///< the paper's default (null = required when no budget resolves it)
  double min = 0, max = 0;           ///< inclusive range for numbers (ignored when min > max)
  std::vector<std::string> choices;  ///< allowed values for strings (empty = any)
  std::string help;                  ///< one line, with units

  static ParamSpec Int(std::string name, int64_t def, int64_t lo, int64_t hi, std::string help);
  static ParamSpec Float(std::string name, double def, double lo, double hi, std::string help);
  static ParamSpec Bool(std::string name, bool def, std::string help);
  static ParamSpec Choice(std::string name, std::string def, std::vector<std::string> choices,
                          std::string help);
};

/// Validate `given` against `specs` and return the full resolved object (defaults filled in).
/// `where` names the config location for messages, e.g. "codecs[2].params".
/// Throws UsageError on unknown keys, wrong JSON types and out-of-range values.
Json resolve_params(const std::vector<ParamSpec>& specs, const Json& given, const std::string& where);

/// Validate one value against one spec; `key` is the full config location (e.g. "codecs[2].params.bits"
/// or "seed"). Returns the normalized value (integers as integers). Throws UsageError.
Json check_param(const ParamSpec& spec, const Json& value, const std::string& key);

/// The names of `specs`, comma separated (for "allowed: ..." messages).
std::string param_names(const std::vector<ParamSpec>& specs);

}  // namespace kvb
