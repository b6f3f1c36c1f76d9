#include "kvb/core/params.h"

#include <cmath>
#include <set>

#include "kvb/core/error.h"
#include "kvb/core/json_text.h"

namespace kvb {

const char* to_string(ParamType t) {
  switch (t) {
    case ParamType::kInt: return "integer";
    case ParamType::kFloat: return "number";
    case ParamType::kBool: return "boolean";
    case ParamType::kString: return "string";
  }
  return "?";
}

ParamSpec ParamSpec::Int(std::string name, int64_t def, int64_t lo, int64_t hi, std::string help) {
  ParamSpec s;
  s.name = std::move(name);
  s.type = ParamType::kInt;
  s.default_value = def;
  s.min = static_cast<double>(lo);
  s.max = static_cast<double>(hi);
  s.help = std::move(help);
  return s;
}

ParamSpec ParamSpec::Float(std::string name, double def, double lo, double hi, std::string help) {
  ParamSpec s;
  s.name = std::move(name);
  s.type = ParamType::kFloat;
  s.default_value = def;
  s.min = lo;
  s.max = hi;
  s.help = std::move(help);
  return s;
}

ParamSpec ParamSpec::Bool(std::string name, bool def, std::string help) {
  ParamSpec s;
  s.name = std::move(name);
  s.type = ParamType::kBool;
  s.default_value = def;
  s.min = 1;
  s.max = 0;
  s.help = std::move(help);
  return s;
}

ParamSpec ParamSpec::Choice(std::string name, std::string def, std::vector<std::string> choices,
                            std::string help) {
  ParamSpec s;
  s.name = std::move(name);
  s.type = ParamType::kString;
  s.default_value = std::move(def);
  s.choices = std::move(choices);
  s.min = 1;
  s.max = 0;
  s.help = std::move(help);
  return s;
}

std::string param_names(const std::vector<ParamSpec>& specs) {
  std::string out;
  for (const auto& s : specs) {
    if (!out.empty()) out += ", ";
    out += s.name;
  }
  return out.empty() ? "(none)" : out;
}

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out += ", ";
    out += s;
  }
  return out;
}

}  // namespace

Json check_param(const ParamSpec& s, const Json& v, const std::string& key) {
  switch (s.type) {
    case ParamType::kInt: {
      // Accept 4 and 4.0, reject 4.5, strings and booleans.
      if (!v.is_number() || v.is_boolean())
        throw UsageError(fmt::format("{}: expected an integer in [{}, {}], found {} ({})", key, s.min, s.max,
                                     json_excerpt(v), v.type_name()));
      const double d = v.get<double>();
      if (!std::isfinite(d) || std::floor(d) != d)
        throw UsageError(fmt::format("{}: expected an integer in [{}, {}], found {}", key, s.min, s.max, json_excerpt(v)));
      if (s.min <= s.max && (d < s.min || d > s.max))
        throw UsageError(fmt::format("{}: expected an integer in [{}, {}], found {}", key, s.min, s.max, json_excerpt(v)));
      return static_cast<int64_t>(d);
    }
    case ParamType::kFloat: {
      if (!v.is_number() || v.is_boolean())
        throw UsageError(fmt::format("{}: expected a number in [{}, {}], found {} ({})", key, s.min, s.max, json_excerpt(v),
                                     v.type_name()));
      const double d = v.get<double>();
      if (!std::isfinite(d) || (s.min <= s.max && (d < s.min || d > s.max)))
        throw UsageError(fmt::format("{}: expected a number in [{}, {}], found {}", key, s.min, s.max, json_excerpt(v)));
      return d;
    }
    case ParamType::kBool:
      if (!v.is_boolean())
        throw UsageError(fmt::format("{}: expected true or false, found {} ({})", key, json_excerpt(v), v.type_name()));
      return v;
    case ParamType::kString: {
      if (!v.is_string())
        throw UsageError(fmt::format("{}: expected a string{}, found {} ({})", key,
                                     s.choices.empty() ? "" : " (one of: " + join(s.choices) + ")", json_excerpt(v),
                                     v.type_name()));
      if (!s.choices.empty()) {
        const auto str = v.get<std::string>();
        bool found = false;
        for (const auto& c : s.choices) found = found || c == str;
        if (!found)
          throw UsageError(fmt::format("{}: expected one of: {}; found {}", key, join(s.choices), excerpt(str)));
      }
      return v;
    }
  }
  return v;
}

Json resolve_params(const std::vector<ParamSpec>& specs, const Json& given, const std::string& where) {
  if (!given.is_null() && !given.is_object())
    throw UsageError(fmt::format("{}: expected an object of parameters, found {} ({})", where, json_excerpt(given),
                                 given.type_name()));
  std::set<std::string> known;
  for (const auto& s : specs) known.insert(s.name);
  if (given.is_object()) {
    for (auto it = given.begin(); it != given.end(); ++it) {
      if (!known.count(it.key()))
        throw UsageError(fmt::format("{}: unknown parameter {}; allowed: {}", where, excerpt(it.key()), param_names(specs)));
    }
  }
  Json out = Json::object();
  for (const auto& s : specs) {
    if (given.is_object() && given.contains(s.name)) {
      out[s.name] = check_param(s, given.at(s.name), where + "." + s.name);
    } else {
      out[s.name] = s.default_value;
    }
  }
  return out;
}

}  // namespace kvb
