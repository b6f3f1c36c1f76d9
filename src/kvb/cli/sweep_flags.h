#pragma once
/// The command-line flags `kvbench run` and `kvbench e2e` share (--output, --device, --threads, --shard,
/// --resume, -q), their RunOptions, and the lines both print at the end.
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "kvb/run/runner.h"

namespace kvb {

struct SweepFlags {
  std::string config, output, device, shard;
  int threads = -1;
  bool quiet = false, resume = false;
};

/// Adds CONFIG (described by config_help), --output, --threads, --shard, --resume, -q (quiet_help) and, with
/// with_device, --device to sub.
void add_sweep_flags(CLI::App* sub, SweepFlags& f, const std::string& config_help, const std::string& quiet_help,
                     bool with_device);
/// RunOptions from the flags (--shard parsed: UsageError unless K/N with 1 <= K <= N), argv as typed; -q also
/// turns off every progress line of the process (core/progress.h), progress is on only on a terminal.
RunOptions sweep_options(const SweepFlags& f, const std::string& command);
/// "kvbench COMMAND NAME: N cells (...) in T s" and where the results are; returns the exit code (4 when a
/// cell failed, else 0).
int print_sweep_summary(const std::string& command, const std::string& name, const RunSummary& s);

}  // namespace kvb
