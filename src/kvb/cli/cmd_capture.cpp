// `kvbench capture`: record a llama2.c checkpoint's real post-RoPE K/V/Q into a kvdump (docs/dump-format.md §2).
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kvb/capture/capture.h"
#include "kvb/cli/commands.h"
#include "kvb/core/error.h"
#include "kvb/core/progress.h"

namespace kvb {

void add_capture_command(CLI::App& root, std::vector<Command>& out) {
  auto o = std::make_shared<CaptureOptions>();
  auto greedy = std::make_shared<bool>(false);
  CLI::App* sub = root.add_subcommand(
      "capture", "Run a llama2.c checkpoint (legacy version-0 .bin) and record its real post-RoPE queries, keys and "
                 "values into a kvdump, with exact float64 ref_out over the first C = T - Q tokens");
  sub->add_option("--model,-m", o->model_path, "llama2.c checkpoint (.bin, legacy version 0)")->required();
  sub->add_option("--out,-o", o->out_path, "output HDF5 file (written to a temporary name, then renamed)")->required();
  sub->add_option("--tokens", o->tokens, "tokens per sequence T (<= the model's seq_len)")->capture_default_str();
  sub->add_option("--queries", o->queries, "recorded queries per sequence: positions C..T-1 with C = T - Q")
      ->capture_default_str();
  sub->add_option("--obs-window", o->obs_window,
                  "observation queries: the model's post-RoPE queries of the last W prompt positions C-W..C-1 (what "
                  "SnapKV/H2O-style eviction scores the cache with at encode time); clamped to C; 0 = none")
      ->capture_default_str();
  sub->add_option("--sequences", o->sequences,
                  "sequences to record (different sampling seeds, or consecutive windows of --token-file; >= 2 lets "
                  "one calibrate and another evaluate)")
      ->capture_default_str();
  sub->add_option("--seed", o->seed, "seed of the sampling streams (sequence s uses a seed derived from it)")
      ->capture_default_str();
  CLI::Option* g = sub->add_flag("--greedy", *greedy,
                                 "greedy argmax decoding from BOS (the default); with --sequences > 1, sequence s >= 1 "
                                 "starts BOS + one seeded token, then continues greedily");
  CLI::Option* t = sub->add_option("--temperature", o->temperature,
                                   "sample from softmax(logits / X) (X > 0) instead of greedy decoding");
  CLI::Option* f = sub->add_option("--token-file", o->token_file,
                                   "record these whitespace-separated token ids instead of generating: sequence s is "
                                   "ids [s*T, (s+1)*T)");
  g->excludes(t);
  g->excludes(f);
  t->excludes(f);
  sub->add_option("--model-name", o->model_name, "root attribute `model` (default: the checkpoint's file stem)");

  auto quiet = std::make_shared<bool>(false);
  sub->add_flag("--quiet,-q", *quiet, "no progress line on stderr (it is shown only on a terminal)");
  out.push_back(Command{sub, [o, t, quiet]() -> int {
                          KVB_CHECK(t->count() == 0 || o->temperature > 0, UsageError,
                                    "--temperature: expected a value > 0 (omit it, or pass --greedy, for greedy), "
                                    "got {}",
                                    o->temperature);
                          set_progress_quiet(*quiet);
                          const auto t0 = std::chrono::steady_clock::now();
                          const int n = capture_dump(*o);
                          const double secs =
                              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                          std::error_code ec;
                          const auto bytes = std::filesystem::file_size(o->out_path, ec);
                          const std::string mode = !o->token_file.empty() ? "ids from " + o->token_file
                                                   : o->temperature > 0 ? fmt::format("temperature {}", o->temperature)
                                                                        : std::string("greedy");
                          fmt::print("wrote {}: {} sequences x {} tokens (context {} + {} queries, {} observation "
                                     "queries) of {}, {}, float32, seed {}, {:.2f} MiB in {:.2f} s\n",
                                     o->out_path, n, o->tokens, o->tokens - o->queries, o->queries,
                                     std::min(o->obs_window, o->tokens - o->queries), o->model_path,
                                     mode, o->seed, ec ? 0.0 : static_cast<double>(bytes) / (1 << 20), secs);
                          return 0;
                        }});
}

}  // namespace kvb
