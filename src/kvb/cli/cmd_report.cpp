// `kvbench report RESULTS... [--out DIR] [--format html|md|both]`: one self-contained HTML page and its Markdown
// twin from results directories (kvb/report/report_render.h, docs/results.md §8).
// Exit 0 ok, 2 usage error, 3 when a results.json is missing or malformed (the file named), 4 when the output
// directory cannot be written.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "kvb/cli/commands.h"
#include "kvb/report/report_render.h"
#include "kvb/run/environment.h"

namespace kvb {

void add_report_command(CLI::App& root, std::vector<Command>& out) {
  struct Opts {
    std::vector<std::string> inputs;
    std::string out, format = "both";
  };
  auto o = std::make_shared<Opts>();
  auto* sub = root.add_subcommand(
      "report",
      "Write report.html (one self-contained page: inline SVG figures, no script, no network) and report.md (the same\n"
      "tables in Markdown) from one or more results directories of run, merge or e2e. Per (results file, dataset):\n"
      "provenance, fidelity vs bits with the Pareto frontier, attend throughput vs bits, a per-layer cosine heat map,\n"
      "a recommendation table (best cell per budget of 2, 3, 4, 5, 8 bits with fixed state, by cosine, rel_l2, kl and\n"
      "for e2e results the next-token KL), a per-layer sensitivity table and every cell. Open report.html in any\n"
      "browser. Exit codes: 0 ok, 2 usage error, 3 missing or malformed results.json, 4 output not writable.");
  sub->add_option("results", o->inputs, "results directories (or their results.json files)")->required();
  sub->add_option("--out,-o", o->out, "directory for report.html and report.md (default: the first results directory)");
  sub->add_option("--format", o->format, "html, md or both (default both)")
      ->check(CLI::IsMember({"html", "md", "both"}));
  out.push_back({sub, [o]() {
                   report::ReportOptions opt;
                   opt.inputs = o->inputs;
                   opt.out_dir = o->out;
                   opt.html = o->format != "md";
                   opt.md = o->format != "html";
                   opt.writer = version_string();
                   const auto f = report::write_report(opt);
                   std::printf("kvbench report: %zu results file(s), %zu section(s), %zu cells\n", o->inputs.size(),
                               f.sections, f.cells);
                   if (!f.html.empty()) {
                     std::error_code ec;
                     const auto abs = std::filesystem::absolute(f.html, ec);
                     std::printf("report: %s (open file://%s in a browser)\n", f.html.c_str(),
                                 ec ? f.html.c_str() : abs.lexically_normal().c_str());
                   }
                   if (!f.md.empty()) std::printf("markdown: %s\n", f.md.c_str());
                   return 0;
                 }});
}

}  // namespace kvb
