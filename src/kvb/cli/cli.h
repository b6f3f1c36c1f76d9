#pragma once
namespace kvb {
/// The kvbench command line (run, list, gen, inspect). Returns the process exit code (kvbench.md §9).
int cli_main(int argc, char** argv);
}  // namespace kvb
