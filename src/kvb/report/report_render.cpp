#include "kvb/report/report_render.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include <fmt/format.h>

#include "kvb/core/error.h"
#include "kvb/report/report_svg.h"
#include "kvb/report/results_io.h"

namespace kvb::report {
namespace fs = std::filesystem;
namespace {

/// A table in plain text cells; rendered as HTML (escaped) or Markdown (separators escaped).
struct Table {
  std::vector<std::string> head;
  std::vector<std::vector<std::string>> rows;
  std::string css;  ///< HTML class
};

std::string opt(const std::optional<double>& v, const char* spec) {
  return v ? fmt::format(fmt::runtime(spec), *v) : std::string("-");
}
std::string speed(const std::optional<double>& v) { return v ? fmt::format("{:.2f}x", *v) : std::string("-"); }

std::string jtext(const Json& j) {
  if (j.is_null()) return "";
  if (j.is_string()) return j.get<std::string>();
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}
std::string jget(const Json& o, const char* k) { return o.is_object() && o.contains(k) ? jtext(o[k]) : std::string(); }

std::string html_table(const Table& t) {
  std::string o = fmt::format("<table class=\"{}\">\n<thead><tr>", t.css.empty() ? "cells" : t.css);
  for (const auto& h : t.head) o += "<th>" + html_escape(h) + "</th>";
  o += "</tr></thead>\n<tbody>\n";
  for (const auto& r : t.rows) {
    o += "<tr>";
    for (const auto& c : r) o += "<td>" + html_escape(c) + "</td>";
    o += "</tr>\n";
  }
  return o + "</tbody>\n</table>\n";
}

std::string md_cell(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '|')
      o += "\\|";
    else if (c == '\n' || c == '\r')
      o += ' ';
    else
      o += c;
  }
  return o;
}

std::string md_table(const Table& t) {
  std::string o = "|";
  auto cell = [&o](const std::string& c) {
    o += ' ';
    o += md_cell(c);
    o += " |";
  };
  for (const auto& h : t.head) cell(h);
  o += "\n|";
  for (size_t i = 0; i < t.head.size(); ++i) o += "---|";
  o += "\n";
  for (const auto& r : t.rows) {
    o += "|";
    for (const auto& c : r) cell(c);
    o += "\n";
  }
  return o;
}

/// Provenance as (field, value) pairs.
Table provenance(const Section& s) {
  const ResultDoc& d = *s.doc;
  Table t;
  t.css = "kv";
  t.head = {"field", "value"};
  auto add = [&](const std::string& k, const std::string& v) {
    if (!v.empty()) t.rows.push_back({k, v});
  };
  add("results file", s.source);
  add("run", d.run.name);
  add("config", d.run.config_path);
  std::string argv;
  for (const auto& a : d.run.argv) argv += (argv.empty() ? "" : " ") + a;
  add("command", argv);
  add("started (UTC)", d.run.started_utc);
  if (d.run.duration_s > 0) add("duration", fmt::format("{:.3g} s", d.run.duration_s));
  if (d.run.shard) add("shard", fmt::format("{}/{}", d.run.shard->first, d.run.shard->second));
  if (d.run.merged_from && d.run.merged_from->is_array())
    add("merged from", fmt::format("{} shard directories", d.run.merged_from->size()));
  add("seed", std::to_string(d.run.seed));
  add("kvbench", fmt::format("{} (git {}{}), {}, {}", jget(d.kvbench, "version"), jget(d.kvbench, "git_sha").substr(0, 12),
                             jget(d.kvbench, "git_dirty") == "true" ? ", dirty" : "", jget(d.kvbench, "build_type"),
                             jget(d.kvbench, "compiler")));
  add("machine", fmt::format("{}; {}; {} hardware threads, {} used", jget(d.environment, "cpu_model"),
                             jget(d.environment, "os"), jget(d.environment, "hardware_threads"), d.run.threads));
  std::string gpus;
  if (d.environment.contains("gpus") && d.environment["gpus"].is_array())
    for (const auto& g : d.environment["gpus"]) gpus += (gpus.empty() ? "" : ", ") + (g.is_object() ? jget(g, "name") : jtext(g));
  add("GPUs", gpus.empty() ? jget(d.environment, "gpu_note") : gpus);
  add("device", d.run.device_requested + (d.run.device_note.empty() ? "" : ": " + d.run.device_note));
  std::set<std::string> impl;
  for (const auto& r : s.rows)
    if (r.ok()) {
      const std::string i = jget(r.cell->codec_report, "implementation");
      impl.insert((i.empty() ? "?" : i) + " (" + r.cell->device + ")");
    }
  std::string impls;
  for (const auto& i : impl) impls += (impls.empty() ? "" : ", ") + i;
  add("codec implementations", impls);
  if (const DatasetRecord* ds = s.dataset) {
    add("dataset", ds->path);
    add("checksum (FNV-1a 64)", ds->checksum_fnv1a64);
    add("model", ds->model + (ds->model_revision.empty() ? "" : " @ " + ds->model_revision));
    add("source", ds->source);
    add("dtype", ds->dtype + (ds->orig_dtype.empty() || ds->orig_dtype == ds->dtype ? "" : " (from " + ds->orig_dtype + ")"));
    add("shape", fmt::format("{} layers, {} heads, {} KV heads, head_dim {}", ds->n_layers, ds->n_heads, ds->n_kv_heads,
                             ds->head_dim));
    std::string seqs;
    for (size_t i = 0; i < ds->evaluated_sequences.size() && i < 6; ++i)
      seqs += (seqs.empty() ? "" : ", ") + fmt::format("{} (C = {})", ds->evaluated_sequences[i].id,
                                                       ds->evaluated_sequences[i].context_len);
    if (ds->evaluated_sequences.size() > 6) seqs += fmt::format(", ... ({} in all)", ds->evaluated_sequences.size());
    add("evaluated sequences", seqs);
    const auto& rc = ds->result.ref_out_check;
    add("ref_out check", rc.status + (rc.max_rel_l2 ? fmt::format(" (max rel_l2 {:.3g})", *rc.max_rel_l2) : "") +
                             (rc.reason ? ": " + *rc.reason : ""));
  }
  if (d.e2e && d.e2e->is_object()) {
    const Json& e = *d.e2e;
    add("e2e model", jget(e, "model"));
    add("e2e text", jget(e, "text"));
    add("e2e prompt / continuation", fmt::format("{} / {} tokens", jget(e, "prompt_len"), jget(e, "continuation_len")));
    if (e.contains("exact") && e["exact"].is_object()) {
      const Json& x = e["exact"];
      std::string ci;
      if (x.contains("perplexity_ci95") && x["perplexity_ci95"].is_array() && x["perplexity_ci95"].size() == 2 &&
          x["perplexity_ci95"][0].is_number() && x["perplexity_ci95"][1].is_number())
        ci = fmt::format(" (95% CI [{:.5g}, {:.5g}])", x["perplexity_ci95"][0].get<double>(),
                         x["perplexity_ci95"][1].get<double>());
      if (x.contains("perplexity") && x["perplexity"].is_number())
        add("exact perplexity", fmt::format("{:.5g}", x["perplexity"].get<double>()) + ci);
    }
    if (e.contains("evaluated_windows") && e["evaluated_windows"].is_array())
      add("e2e evaluated windows", std::to_string(e["evaluated_windows"].size()));
  }
  return t;
}

std::string ppl_text(const Row& r) {
  if (!r.e2e_ppl_change) return "-";
  std::string s = fmt::format("{:+.3f}%", 100 * *r.e2e_ppl_change);
  if (r.e2e_ppl_lo && r.e2e_ppl_hi) s += fmt::format(" [{:+.3f}, {:+.3f}]", 100 * *r.e2e_ppl_lo, 100 * *r.e2e_ppl_hi);
  return s;
}

Table cell_table(const Section& s) {
  Table t;
  t.head = {"frontier", "label", "codec", "status", "bits", "bits with fixed", "cosine", "rel_l2", "spearman", "kl",
            "mass_lost", "attend q/s", "attend vs fp16"};
  if (s.e2e) {
    t.head.insert(t.head.end(), {"e2e KL", "ppl change [95% CI]", "top-1", "decode vs fp16"});
  }
  t.head.push_back("reason");
  const std::set<int> front(s.frontier.begin(), s.frontier.end());
  for (size_t i = 0; i < s.rows.size(); ++i) {
    const Row& r = s.rows[i];
    std::vector<std::string> c = {front.count(static_cast<int>(i)) ? "*" : "", r.label, r.cell->codec,
                                  to_string(r.cell->status), opt(r.bits, "{:.4g}"), opt(r.bits_fixed, "{:.4g}"),
                                  opt(r.cosine, "{:.6f}"), opt(r.rel_l2, "{:.4g}"), opt(r.spearman, "{:.4f}"),
                                  opt(r.kl, "{:.3g}"), opt(r.mass_lost, "{:.3g}"), opt(r.attend_qps, "{:.4g}"),
                                  speed(r.attend_vs_fp16)};
    if (s.e2e) c.insert(c.end(), {opt(r.e2e_kl, "{:.3g}"), ppl_text(r), opt(r.e2e_top1, "{:.4f}"), speed(r.e2e_decode_ratio)});
    c.push_back(r.cell->reason);
    t.rows.push_back(std::move(c));
  }
  return t;
}

Table recommendation_table(const Section& s) {
  Table t;
  t.head = {"budget (bits with fixed)", "best by", "cell", "codec", "bits with fixed", "value",
            s.e2e ? "decode vs fp16" : "attend vs fp16", "cells ranked"};
  for (const auto& rec : s.recommendations) {
    const std::string by = fmt::format("{} ({})", rec.metric, rec.higher_better ? "higher" : "lower");
    const std::string budget = fmt::format("<= {:g}", rec.budget);
    if (rec.row < 0) {
      t.rows.push_back({budget, by, "no ok cell within the budget", "", "", "", "", std::to_string(rec.candidates)});
      continue;
    }
    const Row& r = s.rows[rec.row];
    t.rows.push_back({budget, by, r.label, r.cell->codec, opt(r.bits_fixed, "{:.4g}"), fmt::format("{:.6g}", rec.value),
                      speed(s.e2e ? r.e2e_decode_ratio : r.attend_vs_fp16), std::to_string(rec.candidates)});
  }
  return t;
}

std::string layer_list(const std::vector<LayerValue>& v) {
  std::string o;
  for (const auto& l : v) o += (o.empty() ? "" : ", ") + fmt::format("L{} {:.6f}", l.layer, l.cosine);
  return o;
}

Table sensitivity_table(const Section& s) {
  Table t;
  t.head = {"cell", "codec", "bits with fixed", "layer cosine (mean)",
            fmt::format("worst layers (lowest cosine, up to {})", kSensitivityLayers), "best layer", "spread"};
  for (const auto& se : s.sensitivity) {
    const Row& r = s.rows[se.row];
    t.rows.push_back({r.label, r.cell->codec, opt(r.bits_fixed, "{:.4g}"), fmt::format("{:.6f}", se.mean),
                      layer_list(se.worst), layer_list({se.best}),
                      fmt::format("{:.3g}", se.best.cosine - se.worst.front().cosine)});
  }
  return t;
}

/// "layer 3 is the worst layer of 5 of 8 cells; layer 0 of 3".
std::string worst_layer_summary(const Section& s) {
  if (s.sensitivity.empty()) return "";
  std::map<int64_t, int> n;
  for (const auto& se : s.sensitivity) ++n[se.worst.front().layer];
  std::vector<std::pair<int64_t, int>> v(n.begin(), n.end());
  std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  std::string o;
  for (size_t i = 0; i < v.size() && i < 4; ++i)
    o += (o.empty() ? fmt::format("Layer {} is the worst layer of {} of the {} cells", v[i].first, v[i].second,
                                  s.sensitivity.size())
                    : fmt::format("; layer {} of {}", v[i].first, v[i].second));
  return o + ".";
}

std::string not_drawn(const Section& s) {
  std::string o;
  for (const auto& r : s.rows)
    if (!r.ok())
      o += (o.empty() ? "" : "; ") + fmt::format("{}: {}{}", r.label, to_string(r.cell->status),
                                                 r.cell->reason.empty() ? "" : " (" + r.cell->reason + ")");
  return o;
}

std::string counts(const Section& s) {
  int ok = 0, sk = 0, er = 0;
  for (const auto& r : s.rows) (r.ok() ? ok : r.cell->status == CellStatus::kSkipped ? sk : er)++;
  return fmt::format("{} cells: {} ok, {} skipped, {} failed; {} on the cosine-vs-bits frontier", s.rows.size(), ok, sk,
                     er, s.frontier.size());
}

constexpr const char* kCss = R"(body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1360px}
h1{font-size:24px}h2{font-size:20px;border-bottom:2px solid #ccc;padding-bottom:4px;margin-top:36px}h3{font-size:16px;margin-top:22px}
table{border-collapse:collapse;font-size:12px;margin:6px 0}th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f0f0f0}tbody tr:nth-child(even){background:#fafafa}table.kv td:first-child{font-weight:bold;white-space:nowrap}
.figs{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}figcaption{font-size:12px;color:#555;max-width:640px}
.note{font-size:12px;color:#555}svg.plot{border:1px solid #ddd;font-family:inherit}
)";

}  // namespace

std::string render_html(const std::vector<Section>& sections, const std::vector<Input>& inputs,
                        const std::string& writer) {
  std::string o = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>kvbench report</title>\n";
  o += std::string("<style>\n") + kCss + "</style>\n</head>\n<body>\n<h1>kvbench report</h1>\n";
  std::string files;
  for (const auto& in : inputs) files += (files.empty() ? "" : ", ") + in.file;
  o += fmt::format("<p class=\"note\">Written by {} from {} results file(s): {}. Every figure and table below "
                   "comes from results.json only (docs/results.md §8). Cells on the Pareto frontier of bits with fixed "
                   "state vs cosine are marked * in the cell table.</p>\n",
                   html_escape(writer), inputs.size(), html_escape(files));
  o += "<nav>\n<ul>\n";
  for (size_t i = 0; i < sections.size(); ++i)
    o += fmt::format("<li><a href=\"#section-{}\">{}</a> <span class=\"note\">({})</span></li>\n", i + 1,
                     html_escape(sections[i].title), html_escape(sections[i].source));
  o += "</ul>\n</nav>\n";
  for (size_t i = 0; i < sections.size(); ++i) {
    const Section& s = sections[i];
    o += fmt::format("<section id=\"section-{}\">\n<h2>{}</h2>\n<p class=\"note\">{}</p>\n", i + 1, html_escape(s.title),
                     html_escape(counts(s)));
    o += "<h3>Provenance</h3>\n" + html_table(provenance(s));
    o += "<h3>Figures</h3>\n<div class=\"figs\">\n";
    const std::string fid = fidelity_svg(s), thr = throughput_svg(s), heat = heatmap_svg(s);
    o += "<figure>\n" +
         (fid.empty() ? std::string("<p class=\"note\">No ok cell reports a cosine mean.</p>\n") : fid) +
         "<figcaption>Cosine mean vs bits per element with fixed state; one colour per codec; the Pareto frontier "
         "(fewer bits, higher cosine) ringed and joined.</figcaption>\n</figure>\n";
    o += "<figure>\n" +
         (thr.empty() ? std::string("<p class=\"note\">No attend throughput recorded (throughput off, or e2e results: "
                                    "see the decode ratio in the cell table).</p>\n")
                      : thr) +
         "<figcaption>Attend throughput (median queries/s) vs bits with fixed state; dashed: the dataset's fp16 "
         "reference.</figcaption>\n</figure>\n</div>\n";
    o += "<figure>\n" +
         (heat.empty() ? std::string("<p class=\"note\">No per-layer cosine recorded.</p>\n") : heat) +
         "<figcaption>Per-layer cosine mean: one row per ok cell, one column per layer.</figcaption>\n</figure>\n";
    const std::string nd = not_drawn(s);
    if (!nd.empty()) o += "<p class=\"note\">Not drawn: " + html_escape(nd) + "</p>\n";
    o += "<h3>Recommendation</h3>\n<p class=\"note\">Per budget (bits per element with fixed state &lt;= budget), the "
         "best ok cell by each metric (its better direction from results.json); ties go to fewer bits. kl ranks only cells "
         "that hold every token: a token-dropping codec's kl is over the tokens it kept, blind to what it dropped "
         "(docs/metrics.md §4).</p>\n";
    o += html_table(recommendation_table(s));
    o += "<h3>Per-layer sensitivity</h3>\n";
    const std::string wl = worst_layer_summary(s);
    o += wl.empty() ? "<p class=\"note\">No per-layer cosine recorded.</p>\n"
                    : "<p class=\"note\">" + html_escape(wl) + "</p>\n" + html_table(sensitivity_table(s));
    o += "<h3>All cells</h3>\n" + html_table(cell_table(s)) + "</section>\n";
  }
  return o + "</body>\n</html>\n";
}

std::string render_markdown(const std::vector<Section>& sections, const std::vector<Input>& inputs,
                            const std::string& writer) {
  std::string files;
  for (const auto& in : inputs) files += (files.empty() ? "" : ", ") + in.file;
  std::string o = fmt::format(
      "# kvbench report\n\nWritten by {} from {} results file(s): {}. The figures (fidelity vs bits, attend "
      "throughput vs bits, per-layer heat map) are in report.html next to this file. Cells on the Pareto frontier of "
      "bits with fixed state vs cosine are marked * in the cell table.\n",
      writer, inputs.size(), files);
  for (const Section& s : sections) {
    o += fmt::format("\n## {}\n\n{}\n\n### Provenance\n\n", md_cell(s.title), counts(s));
    o += md_table(provenance(s));
    const std::string nd = not_drawn(s);
    o += "\n### Recommendation\n\nPer budget (bits per element with fixed state <= budget), the best ok cell by each "
         "metric; ties go to fewer bits. kl ranks only cells that hold every token: a token-dropping codec's kl is over "
         "the tokens it kept, blind to what it dropped (docs/metrics.md §4).\n\n" +
         md_table(recommendation_table(s));
    o += "\n### Per-layer sensitivity\n\n";
    const std::string wl = worst_layer_summary(s);
    o += wl.empty() ? std::string("No per-layer cosine recorded.\n") : wl + "\n\n" + md_table(sensitivity_table(s));
    o += "\n### All cells\n\n" + md_table(cell_table(s));
    if (!nd.empty()) o += "\nNot ok: " + nd + "\n";
  }
  return o;
}

ReportFiles write_report(const ReportOptions& opt) {
  KVB_CHECK(!opt.inputs.empty(), UsageError, "report: expected at least one results directory or results.json");
  KVB_CHECK(opt.html || opt.md, UsageError, "report: nothing to write (--format html, md or both)");
  std::vector<Input> inputs;
  inputs.reserve(opt.inputs.size());
  for (const auto& p : opt.inputs) inputs.push_back(load_input(p));
  const auto sections = analyze(inputs);
  std::string dir = opt.out_dir;
  if (dir.empty()) {
    std::error_code ec;
    dir = fs::is_directory(opt.inputs.front(), ec) ? opt.inputs.front()
                                                   : fs::path(opt.inputs.front()).parent_path().string();
    if (dir.empty()) dir = ".";
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw RuntimeError(fmt::format("{}: cannot create the report directory: {}", dir, ec.message()));
  ReportFiles f;
  f.sections = sections.size();
  for (const auto& s : sections) f.cells += s.rows.size();
  if (opt.html) {
    f.html = (fs::path(dir) / "report.html").string();
    write_file_atomic(f.html, render_html(sections, inputs, opt.writer));
  }
  if (opt.md) {
    f.md = (fs::path(dir) / "report.md").string();
    write_file_atomic(f.md, render_markdown(sections, inputs, opt.writer));
  }
  return f;
}

}  // namespace kvb::report
