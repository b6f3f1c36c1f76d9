#pragma once
/// Each kvbench subcommand registers itself on the root CLI11 app and returns the action to run
/// when it was selected. Actions return the process exit code; errors are thrown as kvb::Error.
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace kvb {

/// CLI11 validator for numeric options: a finite number in [lo, hi]. CLI::Range and CLI::NonNegativeNumber
/// let NaN through (every comparison with NaN is false), so `--fidelity-tol nan` would disable a gate.
inline CLI::Validator finite_range(double lo, double hi = std::numeric_limits<double>::max()) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(s, v)) return "expected a number, found " + s.substr(0, 40);
        if (!std::isfinite(v)) return "expected a finite number, found " + s.substr(0, 40);
        if (v < lo || v > hi) return "expected a number in [" + CLI::detail::to_string(lo) + ", " +
                                     (hi == std::numeric_limits<double>::max() ? std::string("inf)") : CLI::detail::to_string(hi) + "]") +
                                     ", found " + s.substr(0, 40);
        return {};
      },
      "FINITE", "finite_range");
}

struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

void add_run_command(CLI::App& root, std::vector<Command>& out);      // cmd_run.cpp
void add_e2e_command(CLI::App& root, std::vector<Command>& out);      // cmd_e2e.cpp
void add_list_command(CLI::App& root, std::vector<Command>& out);     // cmd_list.cpp
void add_gen_command(CLI::App& root, std::vector<Command>& out);      // cmd_gen.cpp
void add_inspect_command(CLI::App& root, std::vector<Command>& out);  // cmd_inspect.cpp
void add_membw_command(CLI::App& root, std::vector<Command>& out);    // cmd_membw.cpp
void add_peak_command(CLI::App& root, std::vector<Command>& out);     // cmd_membw.cpp
void add_capture_command(CLI::App& root, std::vector<Command>& out);  // cmd_capture.cpp
void add_compare_command(CLI::App& root, std::vector<Command>& out);  // cmd_compare.cpp
void add_merge_command(CLI::App& root, std::vector<Command>& out);    // cmd_merge.cpp
void add_report_command(CLI::App& root, std::vector<Command>& out);   // cmd_report.cpp
void add_selftest_command(CLI::App& root, std::vector<Command>& out); // cmd_selftest.cpp

}  // namespace kvb
