#include "kvb/cli/cli.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "kvb/cli/commands.h"
#include "kvb/core/error.h"
#include "kvb/core/json_text.h"
#include "kvb/run/environment.h"

namespace kvb {
namespace {

/// Longest error message printed (a safety net: kvbench's own messages quote bounded excerpts, but a
/// library's message may echo its input).
constexpr size_t kMaxMessage = 2000;

void print_error(const char* what) {
  const size_t n = std::strlen(what);
  std::string m = truncate_utf8(what, kMaxMessage);
  if (n > kMaxMessage) m += fmt::format(" ({} bytes)", n);
  std::fprintf(stderr, "kvbench: error: %s\n", m.c_str());
}

}  // namespace

int cli_main(int argc, char** argv) {
  CLI::App app{
      "kvbench: a research benchmark for KV-cache compression. It loads keys, values and queries recorded from\n"
      "LLMs (HDF5 kvdump files), runs every configured codec at the configured bit budgets, and reports\n"
      "attention-output fidelity, rank correlation, memory per token and throughput as JSON and CSV;\n"
      "`kvbench e2e` runs a llama2.c model with the compressed cache in the loop (perplexity, next-token KL);\n"
      "`kvbench report` turns results directories into one HTML page (plots, recommendation table) and Markdown.\n"
      "Exit codes: 0 ok, 1 regression (compare), 2 usage/config error, 3 data error, 4 runtime failure.",
      "kvbench"};
  app.set_version_flag("--version", version_string());
  app.require_subcommand(1);
  std::vector<Command> commands;
  add_run_command(app, commands);
  add_e2e_command(app, commands);
  add_list_command(app, commands);
  add_gen_command(app, commands);
  add_inspect_command(app, commands);
  add_membw_command(app, commands);
  add_peak_command(app, commands);
  add_capture_command(app, commands);
  add_compare_command(app, commands);
  add_merge_command(app, commands);
  add_report_command(app, commands);
  add_selftest_command(app, commands);
  // CLI11 reports an unknown first word as "A subcommand is required"; say what it is instead.
  std::string names;
  bool known = false;
  for (const auto& c : commands) {
    names += (names.empty() ? "" : ", ") + c.app->get_name();
    known = known || (argc > 1 && c.app->get_name() == argv[1]);
  }
  if (argc > 1 && argv[1][0] != '-' && !known) {
    print_error(fmt::format("unknown command {}; commands: {} (kvbench --help)", excerpt(argv[1], 40), names).c_str());
    return static_cast<int>(ExitCode::kUsage);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help / --version
    print_error(e.what());
    std::fprintf(stderr, "Run with --help for more information.\n");
    return static_cast<int>(ExitCode::kUsage);
  }
  try {
    for (auto& c : commands)
      if (c.app->parsed()) return c.run();
  } catch (const Error& e) {
    print_error(e.what());
    return static_cast<int>(e.code());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "kvbench: error: out of memory\n");
    return static_cast<int>(ExitCode::kRuntime);
  } catch (const std::exception& e) {
    print_error(e.what());
    return static_cast<int>(ExitCode::kRuntime);
  }
  return static_cast<int>(ExitCode::kUsage);
}

}  // namespace kvb
