#include "kvb/report/report_analysis.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include <fmt/format.h>

#include "kvb/core/error.h"
#include "kvb/metrics/metrics.h"
#include "kvb/report/compare.h"
#include "kvb/report/frontier.h"

namespace kvb::report {
namespace fs = std::filesystem;

Input load_input(const std::string& path) {
  std::error_code ec;
  const std::string file = fs::is_directory(path, ec) ? (fs::path(path) / "results.json").string() : path;
  const Json j = load_results_file(file);  // DataError naming the file: missing, not JSON, not a results file
  Input in;
  in.file = file;
  try {
    in.doc = ResultDoc::from_json(j, file);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw DataError(fmt::format("{}: not a kvbench results file: {}", file, e.what()));
  }
  return in;
}

std::optional<double> Row::value(const std::string& metric) const { return cell->mean(metric); }

bool held_set_metric(const std::string& metric) {
  return metric == "kl" || metric == "spearman" || metric == "kendall" || metric == "score_rel_err";
}

std::vector<std::string> recommend_metrics(bool e2e) {
  std::vector<std::string> m = {"cosine", "rel_l2", "kl"};
  if (e2e) m.push_back("e2e_kl");
  return m;
}

bool higher_is_better(const ResultDoc& doc, const std::string& metric) {
  for (const auto& m : doc.metrics)
    if (m.name == metric) return m.better == "higher";
  if (const auto* info = metrics::find_metric(metric)) return info->better == metrics::Better::kHigher;
  return metric == "cosine" || metric == "spearman" || metric.find("agreement") != std::string::npos;
}

std::vector<int> pareto_front(const std::vector<std::pair<double, double>>& pts, bool higher_better) {
  // The frontier rule is kvb::pareto_frontier's (report/frontier.h, shared with the run and e2e summaries);
  // here only the order of the result: by bits, ties better value first.
  std::vector<FrontierPoint> fp;
  fp.reserve(pts.size());
  for (const auto& [x, y] : pts) fp.push_back({x, y});
  const std::vector<bool> on = pareto_frontier(fp, higher_better ? metrics::Better::kHigher : metrics::Better::kLower);
  std::vector<int> out;
  for (size_t i = 0; i < pts.size(); ++i)
    if (on[i]) out.push_back(static_cast<int>(i));
  auto better = [&](double a, double b) { return higher_better ? a > b : a < b; };
  std::stable_sort(out.begin(), out.end(), [&](int a, int b) {
    if (pts[a].first != pts[b].first) return pts[a].first < pts[b].first;
    return better(pts[a].second, pts[b].second);
  });
  return out;
}

namespace {

std::string base_name(const std::string& p) {
  const std::string b = fs::path(p).filename().string();
  return b.empty() ? p : b;
}

std::string title_of(const ResultDoc& doc, const DatasetRecord* ds) {
  std::string run = doc.run.name.empty() ? doc.config.value("name", std::string()) : doc.run.name;
  std::string who = "dataset";
  if (ds) {
    const std::string file = base_name(ds->path);
    who = ds->model.empty() ? file : ds->model;
    if (!ds->model.empty() && !file.empty() && ds->model.find(file) == std::string::npos)
      who = fmt::format("{} ({})", ds->model, file);
  }
  return run.empty() ? who : fmt::format("{}: {}", run, who);
}

/// The strings a cell's "dataset" may hold for dataset `i`: the dump's path and the config's path.
std::set<std::string> dataset_keys(const ResultDoc& doc, size_t i) {
  std::set<std::string> k;
  if (!doc.datasets[i].path.empty()) k.insert(doc.datasets[i].path);
  const Json* cfg = doc.config.is_object() && doc.config.contains("datasets") ? &doc.config["datasets"] : nullptr;
  if (cfg && cfg->is_array() && i < cfg->size() && (*cfg)[i].is_object())
    for (const char* f : {"path", "resolved_path"})
      if ((*cfg)[i].contains(f) && (*cfg)[i][f].is_string()) k.insert((*cfg)[i][f].get<std::string>());
  return k;
}

Row make_row(const CellRecord& c) {
  Row r;
  r.cell = &c;
  r.label = c.label.empty() ? c.codec : c.label;
  if (!c.ok()) return r;
  r.bits = c.storage.bits_per_element;
  r.bits_fixed = c.storage.bits_per_element_with_fixed;
  r.cosine = c.mean("cosine");
  r.rel_l2 = c.mean("rel_l2");
  r.spearman = c.mean("spearman");
  r.kl = c.mean("kl");
  r.mass_lost = c.mean("mass_lost");
  if (c.throughput) {
    r.attend_qps = c.throughput->attend_queries_per_s.median;
    r.attend_vs_fp16 = c.throughput->attend_speedup_vs_fp16;
  }
  if (c.e2e && c.e2e->is_object()) {
    const Json& e = *c.e2e;
    auto num = [](const Json& o, const char* a, const char* b) -> std::optional<double> {
      if (!o.contains(a) || !o[a].is_object() || !o[a].contains(b) || !o[a][b].is_number()) return std::nullopt;
      return o[a][b].get<double>();
    };
    r.e2e_kl = c.mean("e2e_kl");
    if (!r.e2e_kl) r.e2e_kl = num(e, "kl", "mean");
    r.e2e_ppl_change = num(e, "perplexity", "rel_change");
    if (e.contains("perplexity") && e["perplexity"].is_object()) {
      const Json& ci = e["perplexity"].value("rel_change_ci95", Json());
      if (ci.is_array() && ci.size() == 2 && ci[0].is_number() && ci[1].is_number()) {
        r.e2e_ppl_lo = ci[0].get<double>();
        r.e2e_ppl_hi = ci[1].get<double>();
      }
    }
    r.e2e_top1 = num(e, "top1_agreement", "mean");
    r.e2e_decode_ratio = num(e, "decode_tokens_per_s", "ratio");
    if (!r.e2e_decode_ratio) r.e2e_decode_ratio = num(e, "decode_tokens_per_s", "ratio_vs_fp16");
  }
  return r;
}

void finish(Section& s) {
  // Unique labels and codec colours.
  std::map<std::string, int> count, seen;
  for (const auto& r : s.rows) ++count[r.label];
  for (auto& r : s.rows) {
    if (count[r.label] > 1 && ++seen[r.label] > 1) r.label += fmt::format(" #{}", seen[r.label]);
    const auto it = std::find(s.codecs.begin(), s.codecs.end(), r.cell->codec);
    r.codec_index = static_cast<size_t>(it - s.codecs.begin());
    if (it == s.codecs.end()) s.codecs.push_back(r.cell->codec);
  }
  // Frontier of cosine vs bits with fixed state.
  std::vector<std::pair<double, double>> pts;
  std::vector<int> idx;
  for (size_t i = 0; i < s.rows.size(); ++i) {
    const Row& r = s.rows[i];
    if (r.ok() && r.bits_fixed && r.cosine) {
      pts.emplace_back(*r.bits_fixed, *r.cosine);
      idx.push_back(static_cast<int>(i));
    }
  }
  for (int k : pareto_front(pts, higher_is_better(*s.doc, "cosine"))) s.frontier.push_back(idx[k]);
  // Recommendations.
  for (double budget : kBudgets)
    for (const auto& m : recommend_metrics(s.e2e)) {
      Recommendation rec;
      rec.budget = budget;
      rec.metric = m;
      rec.higher_better = higher_is_better(*s.doc, m);
      for (size_t i = 0; i < s.rows.size(); ++i) {
        const Row& r = s.rows[i];
        const bool blind = held_set_metric(m) && r.mass_lost.has_value();  // docs/metrics.md §4
        const auto v = r.ok() && !blind && r.bits_fixed && *r.bits_fixed <= budget + 1e-9 ? r.value(m) : std::nullopt;
        if (!v) continue;
        ++rec.candidates;
        const bool take = rec.row < 0 || (rec.higher_better ? *v > rec.value : *v < rec.value) ||
                          (*v == rec.value && *r.bits_fixed < *s.rows[rec.row].bits_fixed);
        if (take) {
          rec.row = static_cast<int>(i);
          rec.value = *v;
        }
      }
      s.recommendations.push_back(rec);
    }
  // Per-layer sensitivity and the heat map's columns.
  std::set<int64_t> layers;
  for (size_t i = 0; i < s.rows.size(); ++i) {
    const Row& r = s.rows[i];
    if (!r.ok()) continue;
    std::vector<LayerValue> lv;
    for (const auto& l : r.cell->per_layer) {
      const auto it = l.metric_means.find("cosine");
      if (it == l.metric_means.end()) continue;
      lv.push_back({l.layer, it->second});
      layers.insert(l.layer);
    }
    if (lv.empty()) continue;
    Sensitivity se;
    se.row = static_cast<int>(i);
    for (const auto& v : lv) se.mean += v.cosine;
    se.mean /= static_cast<double>(lv.size());
    std::stable_sort(lv.begin(), lv.end(), [](const LayerValue& a, const LayerValue& b) { return a.cosine < b.cosine; });
    se.best = lv.back();
    lv.resize(std::min(lv.size(), kSensitivityLayers));
    se.worst = lv;
    s.sensitivity.push_back(se);
  }
  s.layers.assign(layers.begin(), layers.end());
  // The fp16 reference of the attend plot: the CUDA one when the cells ran on the GPU.
  if (s.dataset) {
    bool cuda = false;
    for (const auto& r : s.rows) cuda = cuda || (r.ok() && r.cell->device == "cuda");
    const auto& ref = cuda && s.dataset->result.reference_throughput_cuda ? s.dataset->result.reference_throughput_cuda
                                                                         : s.dataset->result.reference_throughput;
    if (ref) s.fp16_attend_qps = ref->attend_queries_per_s.median;
  }
}

}  // namespace

std::vector<Section> analyze(const std::vector<Input>& inputs) {
  std::vector<Section> out;
  for (const Input& in : inputs) {
    const ResultDoc& doc = in.doc;
    const size_t nd = doc.datasets.size();
    std::vector<Section> secs(std::max<size_t>(nd, 1));
    std::vector<std::set<std::string>> keys(nd);
    for (size_t i = 0; i < nd; ++i) keys[i] = dataset_keys(doc, i);
    Section orphans;
    for (const auto& c : doc.cells) {
      size_t k = 0;
      while (k < nd && !keys[k].count(c.dataset)) ++k;
      if (k < nd || nd <= 1)
        secs[k < nd ? k : 0].rows.push_back(make_row(c));
      else
        orphans.rows.push_back(make_row(c));
    }
    for (size_t i = 0; i < secs.size(); ++i) {
      secs[i].dataset = i < nd ? &doc.datasets[i] : nullptr;
      secs[i].dataset_index = i < nd ? static_cast<int>(i) : -1;
    }
    if (!orphans.rows.empty()) secs.push_back(std::move(orphans));
    for (auto& s : secs) {
      s.source = in.file;
      s.doc = &doc;
      s.e2e = doc.e2e.has_value();
      s.title = s.dataset || s.rows.empty() || nd <= 1 ? title_of(doc, s.dataset)
                                                       : title_of(doc, nullptr) + " (cells of no listed dataset)";
      finish(s);
      out.push_back(std::move(s));
    }
  }
  return out;
}

}  // namespace kvb::report
