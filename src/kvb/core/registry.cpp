#include "kvb/core/registry.h"

#include <algorithm>

#include <cmath>
#include <limits>

#include "kvb/core/error.h"
#include "kvb/core/json_text.h"

namespace kvb {

void CodecRegistry::add(CodecEntry e) {
  KVB_ASSERT(!e.info.name.empty());
  KVB_ASSERT(find(e.info.name) == nullptr);
  KVB_ASSERT(e.candidates && e.label && e.make_cpu && e.make_ref);
  auto& b = e.info.backends;
  if (e.make_cuda && std::find(b.begin(), b.end(), "cuda") == b.end()) b.push_back("cuda");
  entries_.push_back(std::move(e));
}

const CodecEntry* CodecRegistry::find(const std::string& name) const {
  for (const auto& e : entries_)
    if (e.info.name == name) return &e;
  return nullptr;
}

const CodecEntry& CodecRegistry::at(const std::string& name) const {
  const CodecEntry* e = find(name);
  if (!e) throw UsageError(fmt::format("unknown codec {}; registered codecs: {}", excerpt(name), names()));
  return *e;
}

std::string CodecRegistry::names() const {
  std::string out;
  for (const auto& e : entries_) {
    if (!out.empty()) out += ", ";
    out += e.info.name;
  }
  return out;
}

double Budget::target_bits(int head_dim) const {
  switch (kind) {
    case Kind::kBits: return value;
    case Kind::kBytesPerToken: return 8.0 * value / (2.0 * head_dim);  // bytes per token per KV head, K+V
    case Kind::kRatio: return 16.0 / value;                              // against float16
  }
  return value;
}

std::string Budget::describe() const {
  switch (kind) {
    case Kind::kBits: return fmt::format("bits={}", value);
    case Kind::kBytesPerToken: return fmt::format("bytes_per_token={}", value);
    case Kind::kRatio: return fmt::format("ratio={}", value);
  }
  return "?";
}

BudgetResolution resolve_budget(const CodecEntry& entry, double target_bits, const Json& explicit_params,
                                int head_dim, const std::string& where) {
  BudgetResolution r;
  const auto cands = entry.candidates(head_dim);
  // Tolerance for "not above": b_eff values are exact rationals; guard only against float noise.
  constexpr double kBitsEps = 1e-9;
  const Candidate* best = nullptr;
  for (const auto& c : cands) {
    if (c.bits > target_bits + kBitsEps) continue;
    if (!best || c.bits > best->bits + kBitsEps) best = &c;  // first listed wins among equal b_eff
  }
  if (!best) {
    double lo = std::numeric_limits<double>::infinity();
    for (const auto& c : cands) lo = std::min(lo, c.bits);
    r.reason = cands.empty()
                   ? fmt::format("{} has no budget candidates at head_dim {}", entry.info.name, head_dim)
                   : fmt::format("no {} configuration fits {:.4g} bits per element at head_dim {} (smallest is {:.4g})",
                                 entry.info.name, target_bits, head_dim, lo);
    return r;
  }
  Json merged = best->params;
  if (explicit_params.is_object())
    for (auto it = explicit_params.begin(); it != explicit_params.end(); ++it) merged[it.key()] = it.value();
  r.params = resolve_params(entry.info.params, merged, where);
  r.candidate_bits = best->bits;
  r.ok = true;
  return r;
}

Json resolve_preset(const CodecEntry& entry, const std::string& preset, const Json& explicit_params,
                    const std::string& where) {
  for (const auto& [name, params] : entry.info.presets) {
    if (name != preset) continue;
    Json merged = params;
    if (explicit_params.is_object())
      for (auto it = explicit_params.begin(); it != explicit_params.end(); ++it) merged[it.key()] = it.value();
    return resolve_params(entry.info.params, merged, where);
  }
  std::string names;
  for (const auto& p : entry.info.presets) names += (names.empty() ? "" : ", ") + p.first;
  throw UsageError(fmt::format("{}.preset: codec \"{}\" has no preset {}; presets: {}", where, entry.info.name,
                               excerpt(preset), names.empty() ? "(none)" : names));
}

Json describe(const CodecEntry& e, int head_dim_for_grid) {
  Json j;
  j["name"] = e.info.name;
  j["family"] = e.info.family;
  j["summary"] = e.info.summary;
  j["paper"] = e.info.paper;
  j["budget_rule"] = e.info.budget_rule;
  j["backends"] = e.info.backends;
  j["trainable"] = e.info.trainable;
  j["defines_scores"] = e.info.defines_scores;
  j["selects_tokens"] = e.info.selects_tokens;
  j["needs_obs_queries"] = e.info.needs_obs_queries;
  if (!e.info.notes.empty()) j["notes"] = e.info.notes;
  Json params = Json::array();
  for (const auto& p : e.info.params) {
    Json pj{{"name", p.name}, {"type", to_string(p.type)}, {"default", p.default_value}, {"help", p.help}};
    if (p.min <= p.max) pj["range"] = {p.min, p.max};
    if (!p.choices.empty()) pj["choices"] = p.choices;
    params.push_back(pj);
  }
  j["params"] = params;
  Json presets = Json::object();
  for (const auto& [name, p] : e.info.presets) presets[name] = p;
  j["presets"] = presets;
  Json grid = Json::array();
  for (const auto& c : e.candidates(head_dim_for_grid))
    grid.push_back({{"params", c.params}, {"bits_per_element", c.bits}, {"label", e.label(resolve_params(e.info.params, c.params, e.info.name))}});
  j["budget_grid"] = {{"head_dim", head_dim_for_grid}, {"candidates", grid}};
  return j;
}

}  // namespace kvb
