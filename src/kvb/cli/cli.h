#pragma once
namespace kvb {
/// The kvbench command line (run, list, gen, inspect). Returns the process exit code (docs/errors.md §1).
int cli_main(int argc, char** argv);
}  // namespace kvb
