// `kvbench inspect FILE`: validate a kvdump against the schema (exit 3 with the reason when it is not
// valid) and print its shapes, attributes, sequences and per-layer statistics.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kvb/cli/commands.h"
#include "kvb/core/error.h"
#include "kvb/io/inspect.h"
#include "kvb/io/kvdump.h"

namespace kvb {
namespace {

struct InspectCli {
  std::string file;
  bool json = false;
  bool checksum = false;
  bool no_stats = false;
  int64_t max_queries = 16;
  int64_t max_sequences = 0;
};

std::string range_str(const HeadRange& r, const char* fmt_one) {
  return fmt::format(fmt::runtime(std::string(fmt_one) + " [" + fmt_one + ", " + fmt_one + "]"), r.mean, r.min, r.max);
}

void print_text(const KvDumpReader& r, const InspectCli& o, const DumpStats* st, const std::string& checksum) {
  const DumpAttrs& a = r.attrs();
  const ModelShape& s = a.shape;
  fmt::print("{}: valid kvdump (format_version 1)\n", r.path());
  if (!checksum.empty()) fmt::print("  checksum       fnv1a64:{}\n", checksum);
  fmt::print("  model          {} (revision {})\n", a.model, a.model_revision);
  fmt::print("  source         {}\n", a.source);
  fmt::print("  shape          {} layers, {} query heads, {} KV heads ({}), head_dim {}\n", s.n_layers, s.n_heads,
             s.n_kv_heads, s.group() == 1 ? std::string("MHA") : fmt::format("GQA {}:1", s.group()), s.head_dim);
  fmt::print("  dtype          {} (model dtype {})\n", to_string(r.dtype()), a.orig_dtype);
  fmt::print("  attention      softmax_scale {:.6g}, softcap {}, qk_norm {}\n", a.softmax_scale,
             a.attn_softcap > 0 ? fmt::format("{:g}", a.attn_softcap) : std::string("none"), a.qk_norm);
  fmt::print("  rope           {} (theta {:g}), {}\n", a.rope_style, a.rope_theta,
             a.rope_applied ? "applied to keys and queries" : "not applied");
  if (a.seed) fmt::print("  seed           {}\n", *a.seed);
  if (!a.created_utc.empty()) fmt::print("  created_utc    {}\n", a.created_utc);
  const auto& seqs = r.sequences();
  fmt::print("  sequences      {}\n", seqs.size());
  fmt::print("    {:<12} {:>8} {:>8} {:>8}  {:<17} {:<7} {:<6} {:<18} {}\n", "id", "tokens", "context", "queries",
             "positions", "ref_out", "tokens", "obs (W: positions)", "sliding_window");
  for (const auto& q : seqs) {
    const auto [mn, mx] = std::minmax_element(q.query_positions.begin(), q.query_positions.end());
    bool any_sw = false;
    for (int64_t w : q.sliding_window) any_sw = any_sw || w > 0;
    // The prompt's observation queries (docs/dump-format.md §1.2): W and the positions they were recorded at.
    const std::string obs = q.has_obs() ? fmt::format("{}: {}..{}", q.obs_positions.size(), q.obs_positions.front(),
                                                      q.obs_positions.back())
                                        : std::string("none");
    fmt::print("    {:<12} {:>8} {:>8} {:>8}  {:<17} {:<7} {:<6} {:<18} {}\n", q.id, q.n_tokens, q.context_len,
               q.n_queries, fmt::format("{}..{}", *mn, *mx), q.has_ref_out ? "yes" : "no", q.has_tokens ? "yes" : "no",
               obs, any_sw ? fmt::format("{}", fmt::join(q.sliding_window, ",")) : std::string("global"));
  }
  if (!st) return;
  fmt::print("\nper-layer statistics over the context tokens ({} sequence(s), {} queries per head; "
             "per-head values as mean [min, max] over heads)\n",
             st->sequences_used, st->queries_per_head);
  fmt::print("{:>5}  {:<20} {:>9} {:>9}  {:<20} {:<20} {:<11}  {}\n", "layer", "key norm min/med/max", "k max/med",
             "v max/med", "entropy (nats)", "sink mass", "ref_out err", "top outlier key channels (kv:channel RMS/median)");
  for (const auto& l : st->layers) {
    std::string outl;
    for (const auto& c : l.top_outliers)
      outl += fmt::format("{}{}:{} {:.1f}x", outl.empty() ? "" : "  ", c.kv_head, c.channel, c.ratio);
    fmt::print("{:>5}  {:<20} {:>9.2f} {:>9.2f}  {:<20} {:<20} {:<11}  {}\n", l.layer,
               fmt::format("{:.3g}/{:.3g}/{:.3g}", l.key_norm.min, l.key_norm.median, l.key_norm.max),
               l.key_norm.ratio.mean, l.value_norm.ratio.mean, range_str(l.entropy, "{:.2f}"),
               range_str(l.sink_mass, "{:.2f}"),
               l.ref_max_rel_err ? fmt::format("{:.2e}", *l.ref_max_rel_err) : std::string("-"), outl);
  }
  (void)o;
}

}  // namespace

void add_inspect_command(CLI::App& root, std::vector<Command>& out) {
  auto st = std::make_shared<InspectCli>();
  CLI::App* sub = root.add_subcommand(
      "inspect", "Validate a kvdump against the schema and print shapes, dtypes, attributes and per-layer statistics "
                 "(key/value norms, outlier channels, attention entropy, sink mass, ref_out self-check)");
  sub->add_option("file", st->file, "kvdump HDF5 file")->required();
  sub->add_flag("--json", st->json, "print one JSON object instead of the text report");
  sub->add_option("--max-queries", st->max_queries,
                  "recorded queries per head and sequence used for the attention statistics (<= 0: all)")
      ->capture_default_str();
  sub->add_option("--max-sequences", st->max_sequences, "sequences used for the statistics (0: all)")
      ->capture_default_str();
  sub->add_flag("--checksum", st->checksum, "also print the file's FNV-1a 64 checksum (reads the whole file)");
  sub->add_flag("--no-stats", st->no_stats, "validate and describe only (skip the statistics)");
  out.push_back(Command{sub, [st]() -> int {
                          const KvDumpReader r(st->file);  // validates the schema; throws DataError (exit 3)
                          std::unique_ptr<DumpStats> stats;
                          if (!st->no_stats) {
                            InspectOptions io;
                            io.max_queries = st->max_queries;
                            io.max_sequences = st->max_sequences;
                            stats = std::make_unique<DumpStats>(inspect_dump(r, io));
                          }
                          const std::string sum = st->checksum ? r.checksum() : std::string();
                          if (st->json) {
                            Json j = dump_summary_json(r);
                            j["valid"] = true;
                            if (!sum.empty()) j["checksum"] = "fnv1a64:" + sum;
                            if (stats) j["statistics"] = to_json(*stats);
                            fmt::print("{}\n", j.dump(2));
                          } else {
                            print_text(r, *st, stats.get(), sum);
                          }
                          return 0;
                        }});
}

}  // namespace kvb
