#include "kvb/cli/cli.h"

#include <cstdio>
#include <exception>

#include "kvb/cli/commands.h"
#include "kvb/core/error.h"
#include "kvb/run/environment.h"

namespace kvb {

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
  add_capture_command(app, commands);
  add_compare_command(app, commands);
  add_merge_command(app, commands);
  add_report_command(app, commands);
  add_selftest_command(app, commands);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);  // prints help/version (rc 0) or the parse error
    return rc == 0 ? 0 : static_cast<int>(ExitCode::kUsage);
  }
  try {
    for (auto& c : commands)
      if (c.app->parsed()) return c.run();
  } catch (const Error& e) {
    std::fprintf(stderr, "kvbench: error: %s\n", e.what());
    return static_cast<int>(e.code());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "kvbench: error: out of memory\n");
    return static_cast<int>(ExitCode::kRuntime);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvbench: error: %s\n", e.what());
    return static_cast<int>(ExitCode::kRuntime);
  }
  return static_cast<int>(ExitCode::kUsage);
}

}  // namespace kvb
