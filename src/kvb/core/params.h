#pragma once
/// Typed codec parameters: a declared ParamSpec list validates a JSON object of parameters, rejecting
/// unknown keys and bad types or ranges with a message that names the key and the allowed values. A
/// ParamTable binds each spec to the field of the codec's parameter struct it sets, so the spec list,
/// parsing (from_json) and the struct's JSON (to_json) derive from one declaration per parameter.
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
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

/// One parameter of a parameter struct P: its spec and how it reads into / writes from its field.
template <class P>
struct ParamBinding {
  ParamSpec spec;
  std::function<void(P&, const Json&)> read;  ///< a validated JSON value -> the field
  std::function<Json(const P&)> write;        ///< the field -> its JSON value
};

/// Binds `spec` to a field of P of a JSON-convertible type (int, double, bool, std::string).
template <class P, class T>
ParamBinding<P> bind(ParamSpec spec, T P::*field) {
  return {std::move(spec), [field](P& p, const Json& v) { p.*field = v.get<T>(); },
          [field](const P& p) { return Json(p.*field); }};
}

/// Binds a Choice spec to a field of any type through `values`, one (choice, field value) per choice of the
/// spec, in the spec's order (checked here: a choice without a value cannot silently map to a default).
template <class P, class T>
ParamBinding<P> bind_choice(ParamSpec spec, T P::*field, std::vector<std::pair<std::string, T>> values) {
  bool same = values.size() == spec.choices.size();
  for (size_t i = 0; same && i < values.size(); ++i) same = values[i].first == spec.choices[i];
  if (!same) throw std::logic_error("bind_choice: the values of parameter \"" + spec.name + "\" do not list its choices");
  auto read = [field, values](P& p, const Json& v) {
    for (const auto& [name, x] : values)
      if (v == name) {
        p.*field = x;
        return;
      }
    throw std::logic_error("bind_choice: \"" + v.dump() + "\" is not a choice (resolve_params first)");
  };
  auto write = [field, values, name = spec.name](const P& p) {
    for (const auto& [choice, x] : values)
      if (p.*field == x) return Json(choice);
    throw std::logic_error("bind_choice: parameter \"" + name + "\" holds a value no choice names");
  };
  return {std::move(spec), std::move(read), std::move(write)};
}

/// The parameters of a parameter struct P, each declared once (spec + field).
template <class P>
class ParamTable {
 public:
  explicit ParamTable(std::vector<ParamBinding<P>> bindings) : b_(std::move(bindings)) {}
  /// The specs, in declaration order (CodecInfo::params).
  std::vector<ParamSpec> specs() const {
    std::vector<ParamSpec> s;
    for (const auto& b : b_) s.push_back(b.spec);
    return s;
  }
  /// P from a resolved parameter object (resolve_params(specs(), ...)), starting from `base` for fields no
  /// parameter sets.
  P from_json(const Json& resolved, P base = P{}) const {
    for (const auto& b : b_) b.read(base, resolved.at(b.spec.name));
    return base;
  }
  /// The resolved parameter object of p (from_json's inverse).
  Json to_json(const P& p) const {
    Json j = Json::object();
    for (const auto& b : b_) j[b.spec.name] = b.write(p);
    return j;
  }

 private:
  std::vector<ParamBinding<P>> b_;
};

}  // namespace kvb
