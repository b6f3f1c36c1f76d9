// `kvbench compare BASE NEW`: cell-by-cell differences of two results.json files (kvb/report/compare.h).
// Exit 0 when nothing regressed, 1 on a regression, 2 on a usage error, 3 when a file is unreadable.
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "kvb/cli/commands.h"
#include "kvb/core/error.h"
#include "kvb/report/compare.h"

namespace kvb {

void add_compare_command(CLI::App& root, std::vector<Command>& out) {
  struct Opts {
    std::string base, now;
    double fidelity_tol = 1e-6;
    double storage_tol = 0.0;
    std::optional<double> throughput_tol;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = root.add_subcommand(
      "compare",
      "Compare two results.json files (or results directories) cell by cell. Cells match by (dataset, codec,\n"
      "resolved params). Fidelity means use an absolute tolerance and each metric's better direction; storage\n"
      "figures a relative one (growth is a regression); throughput medians only with --throughput-tol.\n"
      "A cell that was ok in BASE and is missing, skipped or failed in NEW is a regression.\n"
      "Exit codes: 0 no regression, 1 regression, 2 usage error, 3 unreadable or invalid results file.");
  sub->add_option("base", o->base, "the baseline results.json (or its directory)")->required();
  sub->add_option("new", o->now, "the new results.json (or its directory)")->required();
  sub->add_option("--fidelity-tol", o->fidelity_tol,
                  "absolute tolerance on fidelity means (default 1e-6; runs are deterministic for the same build)")
      ->check(finite_range(0.0));
  sub->add_option("--storage-tol", o->storage_tol, "relative tolerance on storage figures (default 0: exact)")
      ->check(finite_range(0.0));
  sub->add_option("--throughput-tol", o->throughput_tol,
                  "relative tolerance on throughput medians, e.g. 0.1 = 10% (default: throughput not compared)")
      ->check(finite_range(0.0));
  sub->add_flag("--json", o->json, "print a machine-readable JSON report on stdout instead of the table");
  out.push_back({sub, [o]() {
                   const Json base = load_results_file(o->base);
                   const Json now = load_results_file(o->now);
                   CompareOptions opt;
                   opt.fidelity_tol = o->fidelity_tol;
                   opt.storage_tol = o->storage_tol;
                   opt.throughput_tol = o->throughput_tol;
                   const CompareReport r = compare_results(base, now, opt, o->base, o->now);
                   if (o->json)
                     std::fputs((r.to_json().dump(2) + "\n").c_str(), stdout);
                   else
                     std::fputs(r.to_text().c_str(), stdout);
                   return static_cast<int>(r.regressed() ? ExitCode::kRegression : ExitCode::kOk);
                 }});
}

}  // namespace kvb
