#pragma once
/// `kvbench report RESULTS... [--out DIR] [--format html|md|both]` (docs/results.md §8): report.html — one
/// self-contained page (inline CSS and SVG figures, no script, no external reference) — and report.md, its
/// Markdown twin with the same tables (the figures are only in the HTML). One section per (results file,
/// dataset), each with: provenance, the figures (report_svg.h), the recommendation table, the per-layer
/// sensitivity table and the full cell table; e2e results add their columns and rank by e2e KL too.
/// Every string taken from a results file is escaped (HTML) or has its table separators escaped (Markdown).
/// The output depends only on the inputs (no clock), so two reports of the same files are byte-identical.
#include <string>
#include <vector>

#include "kvb/report/report_analysis.h"

namespace kvb::report {

std::string render_html(const std::vector<Section>& sections, const std::vector<Input>& inputs,
                        const std::string& writer);
std::string render_markdown(const std::vector<Section>& sections, const std::vector<Input>& inputs,
                            const std::string& writer);

struct ReportOptions {
  std::vector<std::string> inputs;  ///< results directories or results.json files
  std::string out_dir;              ///< empty: the first input's directory
  bool html = true, md = true;
  std::string writer = "kvbench";   ///< who wrote the page (the CLI passes its version string; report/ sits below run/)
};

struct ReportFiles {
  std::string html, md;  ///< the paths written ("" when not asked for)
  size_t sections = 0, cells = 0;
};

/// Read every input (DataError, exit 3, naming a missing or malformed results.json), analyze, and write the
/// asked-for files atomically into the output directory (created when absent; RuntimeError when it cannot be).
ReportFiles write_report(const ReportOptions& opt);

}  // namespace kvb::report
