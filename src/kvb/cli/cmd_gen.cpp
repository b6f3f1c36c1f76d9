// `kvbench gen`: write a synthetic kvdump with LLM-like statistics (docs/dump-format.md §3).
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kvb/cli/commands.h"
#include "kvb/core/error.h"
#include "kvb/core/progress.h"
#include "kvb/gen/generator.h"

namespace kvb {
namespace {

/// Everything the options bind to; the preset is resolved at run time, then every option the user
/// actually gave overrides it.
struct GenCli {
  std::string out;
  std::string model_like = "tiny";
  std::vector<std::function<void(GenOptions&)>> overrides;
};

/// An option bound to a GenOptions field: shown with the generator's default, applied only when given.
template <class T>
void knob(CLI::App* sub, GenCli& st, const std::string& flag, T GenOptions::*field, const std::string& help) {
  auto value = std::make_shared<T>(GenOptions{}.*field);
  CLI::Option* opt = sub->add_option(flag, *value, help)->capture_default_str();
  st.overrides.push_back([opt, value, field](GenOptions& g) {
    if (opt->count() > 0) g.*field = *value;
  });
}

/// An option applied through `set` only when given; preset-dependent, so no default is shown.
template <class T, class F>
CLI::Option* given(CLI::App* sub, GenCli& st, const std::string& flag, const std::string& help, F set) {
  auto value = std::make_shared<T>();
  CLI::Option* opt = sub->add_option(flag, *value, help);
  st.overrides.push_back([opt, value, set](GenOptions& g) {
    if (opt->count() > 0) set(g, *value);
  });
  return opt;
}

/// An option bound to one field of the shape.
void shape_opt(CLI::App* sub, GenCli& st, const std::string& flag, int ModelShape::*field, const std::string& help) {
  given<int>(sub, st, flag, help, [field](GenOptions& g, int v) { g.shape.*field = v; });
}

/// Shape, length, dtype and RoPE: the options that override the preset.
void add_shape_options(CLI::App* sub, GenCli& st) {
  shape_opt(sub, st, "--layers", &ModelShape::n_layers, "number of layers (default: the preset's)");
  shape_opt(sub, st, "--heads", &ModelShape::n_heads, "query heads (default: the preset's)");
  shape_opt(sub, st, "--kv-heads", &ModelShape::n_kv_heads, "KV heads, a divisor of --heads (default: the preset's)");
  shape_opt(sub, st, "--head-dim", &ModelShape::head_dim, "head dimension, even, 4..1024 (default: the preset's)");
  given<int64_t>(sub, st, "--tokens",
                 "tokens per sequence T = context C + queries Q (default: the preset's; 4096+64 for the 7-8B presets)",
                 [](GenOptions& g, int64_t v) { g.tokens = v; });
  given<int64_t>(sub, st, "--queries", "recorded decode queries per sequence: the last Q positions (default: the preset's)",
                 [](GenOptions& g, int64_t v) { g.queries = v; });
  knob(sub, st, "--sequences", &GenOptions::sequences, "sequences (>= 2 lets one calibrate and another evaluate)");
  knob(sub, st, "--seed", &GenOptions::seed, "seed of every random stream (same options + seed = same tensors)");
  given<std::string>(sub, st, "--dtype", "stored dtype: float16, bfloat16 or float32 (default: the preset's)",
                     [](GenOptions& g, const std::string& v) { g.dtype = parse_dtype(v); })
      ->check(CLI::IsMember({"float16", "bfloat16", "float32"}));
  given<std::string>(sub, st, "--rope-style",
                     "half (pairs i, i+d/2), interleaved (pairs 2i, 2i+1) or none (default: the preset's)",
                     [](GenOptions& g, const std::string& v) { g.rope_style = v; })
      ->check(CLI::IsMember({"half", "interleaved", "none"}));
  given<double>(sub, st, "--rope-theta", "RoPE base theta (default: the preset's)",
                [](GenOptions& g, double v) { g.rope_theta = v; });
}

/// The statistics knobs (generator.h documents each).
void add_statistics_knobs(CLI::App* sub, GenCli& st) {
  knob(sub, st, "--outlier-channels", &GenOptions::outlier_channels,
       "key channels per KV head with 10-50x the median channel RMS (whole RoPE pairs; 0 = none)");
  knob(sub, st, "--outlier-scale-min", &GenOptions::outlier_scale_min, "smallest outlier RMS / median channel RMS");
  knob(sub, st, "--outlier-scale-max", &GenOptions::outlier_scale_max, "largest outlier RMS / median channel RMS");
  knob(sub, st, "--channel-mean", &GenOptions::channel_mean,
       "std of the per-channel key mean, in channel stds (real keys are biased)");
  knob(sub, st, "--sink-share-min", &GenOptions::sink_share_min,
       "smallest per-head share of attention on the sink token 0");
  knob(sub, st, "--sink-share-max", &GenOptions::sink_share_max, "largest per-head share of attention on token 0");
  knob(sub, st, "--sink-share-jitter", &GenOptions::sink_share_jitter,
       "per-query std of logit(sink share) around the head's target");
  knob(sub, st, "--sink-key-scale", &GenOptions::sink_key_scale, "sink key norm / typical key norm");
  knob(sub, st, "--sink-value-scale", &GenOptions::sink_value_scale, "sink value norm / typical value norm");
  knob(sub, st, "--sink-content", &GenOptions::sink_content,
       "weight of the slow (sink) RoPE pairs in a query's content part, in [0, 1]: queries reach the sink "
       "through a shared direction there, their token content sits mostly on the faster pairs");
  knob(sub, st, "--key-scale-tilt", &GenOptions::key_scale_tilt,
       "log-ratio of key channel scale from the fastest to the slowest RoPE pair (real keys are larger at "
       "low frequencies; 0 = flat)");
  knob(sub, st, "--focus-min", &GenOptions::focus_min, "smallest per-head focus (0 = broad attention)");
  knob(sub, st, "--focus-max", &GenOptions::focus_max, "largest per-head focus (1 = peaked on a few tokens)");
  knob(sub, st, "--entropy-broad", &GenOptions::entropy_broad,
       "non-sink attention entropy of a focus-0 head, as a fraction of ln(C)");
  knob(sub, st, "--entropy-peaked", &GenOptions::entropy_peaked,
       "non-sink attention entropy of a focus-1 head, as a fraction of ln(C)");
  knob(sub, st, "--value-scale-spread", &GenOptions::value_scale_spread,
       "sigma of the log-normal per-token value scale");
  knob(sub, st, "--rank", &GenOptions::rank, "dimension of the latent per-token state (low-rank K/V structure)");
  knob(sub, st, "--key-noise", &GenOptions::key_noise, "std of isotropic noise in key channels, in [0, 1)");
  knob(sub, st, "--value-noise", &GenOptions::value_noise, "std of isotropic noise in value channels, in [0, 1)");
  knob(sub, st, "--topic-persistence", &GenOptions::topic_persistence,
       "AR(1) coefficient of the topic state (local correlation), in [0, 1)");
  knob(sub, st, "--copy-prob", &GenOptions::copy_prob,
       "per-token probability of starting to copy an earlier 4-32 token span");
  knob(sub, st, "--calib-queries", &GenOptions::calib_queries,
       "calibration queries per head for fitting its temperature");
  knob(sub, st, "--obs-window", &GenOptions::obs_window,
       "observation queries per sequence: the queries of the last W prompt positions C-W..C-1, from the same "
       "query model (what SnapKV/H2O-style eviction scores the cache with at encode time); clamped to the "
       "context C; 0 = none");
  knob(sub, st, "--chunk-tokens", &GenOptions::chunk_tokens, "HDF5 chunk length in tokens (0 = contiguous)");
  knob(sub, st, "--deflate", &GenOptions::deflate, "deflate level 0-9 (0 = uncompressed)");
  auto no_ref = std::make_shared<bool>(false);
  sub->add_flag("--no-ref-out", *no_ref, "do not store ref_out (skips the exact float64 attention)");
  st.overrides.push_back([no_ref](GenOptions& g) {
    if (*no_ref) g.write_ref_out = false;
  });
}

int run_gen(const GenCli& st) {
  GenOptions g = gen_preset(st.model_like);
  for (const auto& apply : st.overrides) apply(g);
  validate_gen_options(g);
  const auto t0 = std::chrono::steady_clock::now();
  generate_dump(st.out, g);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(st.out, ec);
  const ModelShape& s = g.shape;
  fmt::print("wrote {}: synthetic:{}, {} layers x {} heads ({} KV heads), head_dim {}, {} sequences x {} tokens "
             "(context {} + {} queries, {} observation queries), {}, rope {}, seed {}, {:.1f} MiB in {:.2f} s\n",
             st.out, g.model_like, s.n_layers, s.n_heads, s.n_kv_heads, s.head_dim, g.sequences, g.tokens,
             g.tokens - g.queries, g.queries, std::min(g.obs_window, g.tokens - g.queries), to_string(g.dtype),
             g.rope_style, g.seed,
             ec ? 0.0 : static_cast<double>(bytes) / (1 << 20), secs);
  return 0;
}

}  // namespace

void add_gen_command(CLI::App& root, std::vector<Command>& out) {
  auto st = std::make_shared<GenCli>();
  std::string presets;
  for (const auto& p : gen_presets()) presets += (presets.empty() ? "" : ", ") + p;
  CLI::App* sub = root.add_subcommand(
      "gen", "Write a synthetic kvdump with LLM-like K/V/Q statistics (outlier channels, RoPE, attention sink, "
             "peaked-to-broad heads, GQA) and exact ref_out");
  sub->add_option("--out,-o", st->out, "output HDF5 file (written to a temporary name, then renamed)")->required();
  sub->add_option("--model-like", st->model_like, "shape preset: " + presets)->capture_default_str();
  add_shape_options(sub, *st);
  add_statistics_knobs(sub, *st);
  auto quiet = std::make_shared<bool>(false);
  sub->add_flag("--quiet,-q", *quiet, "no progress line on stderr (it is shown only on a terminal)");
  out.push_back(Command{sub, [st, quiet]() -> int {
                          set_progress_quiet(*quiet);
                          return run_gen(*st);
                        }});
}

}  // namespace kvb
