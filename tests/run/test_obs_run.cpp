// The runner and the prompt's observation queries (docs/dump-format.md §1.2): a codec whose entry has
// CodecInfo::needs_obs_queries becomes a skipped cell, with a reason saying what is missing and how to record
// it, on a dataset whose evaluated sequences lack them; and every encode sees LayerKV::obs, cache-relative
// (shifted by a sliding-window layer's cache start). No eviction codec is registered here, so the entries
// and the probe codec are made by hand.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kvb/core/registry.h"
#include "kvb/core/rng.h"
#include "kvb/io/kvdump.h"
#include "kvb/run/evaluate.h"
#include "kvb/run/plan.h"

namespace {

namespace fs = std::filesystem;

kvb::CodecEntry hand_made_entry(const std::string& name, bool needs_obs) {
  kvb::CodecEntry e;
  e.info.name = name;
  e.info.family = "token_eviction";
  e.info.needs_obs_queries = needs_obs;
  e.info.selects_tokens = true;
  return e;
}

kvb::SequenceInfo seq_info(const std::string& id, std::vector<int64_t> obs) {
  kvb::SequenceInfo s;
  s.id = id;
  s.n_tokens = 40;
  s.context_len = 32;
  s.obs_positions = std::move(obs);
  return s;
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(ObsSkip, ReasonNamesTheCodecTheDumpAndHowToRecord) {
  const kvb::CodecEntry needs = hand_made_entry("snapkv-test", true);
  const kvb::CodecEntry plain = hand_made_entry("plain-test", false);
  const std::vector<kvb::SequenceInfo> none = {seq_info("s0", {}), seq_info("s1", {})};
  const std::vector<kvb::SequenceInfo> all = {seq_info("s0", {30, 31}), seq_info("s1", {28, 29, 30, 31})};
  const std::string dump = "/data/no_obs.h5";

  const std::string why = kvb::run::missing_obs_reason(needs, none, {0, 1}, dump);
  for (const char* part : {"snapkv-test", "/data/no_obs.h5", "observation queries", "obs_queries",
                           "docs/dump-format.md §1.2", "has none", "--obs-window W", "scripts/record_kv.py"})
    EXPECT_TRUE(has(why, part)) << "reason lacks '" << part << "': " << why;
  EXPECT_FALSE(has(why, " of its ")) << "every evaluated sequence lacks them: no per-sequence list: " << why;

  EXPECT_EQ(kvb::run::missing_obs_reason(plain, none, {0, 1}, dump), "") << "a codec that does not need them runs";
  EXPECT_EQ(kvb::run::missing_obs_reason(needs, all, {0, 1}, dump), "");
  EXPECT_EQ(kvb::run::missing_obs_reason(needs, {seq_info("s0", {}), seq_info("s1", {31})}, {1}, dump), "")
      << "only the evaluated sequences count (s0 calibrates)";

  // Some evaluated sequences lack them: the reason says which (bounded).
  const std::string part =
      kvb::run::missing_obs_reason(needs, {seq_info("s0", {31}), seq_info("s1", {})}, {0, 1}, dump);
  EXPECT_TRUE(has(part, "for 1 of its 2 evaluated sequences (\"s1\")")) << part;
  std::vector<kvb::SequenceInfo> many;
  std::vector<size_t> idx;
  for (int i = 0; i < 10; ++i) {
    many.push_back(seq_info(fmt::format("s{}", i), i == 0 ? std::vector<int64_t>{31} : std::vector<int64_t>{}));
    idx.push_back(static_cast<size_t>(i));
  }
  const std::string bounded = kvb::run::missing_obs_reason(needs, many, idx, dump);
  EXPECT_TRUE(has(bounded, "9 of its 10")) << bounded;
  EXPECT_TRUE(has(bounded, "\"s4\" and 5 more")) << bounded;
  EXPECT_FALSE(has(bounded, "\"s5\"")) << bounded;
}

// ---------------------------------------------------------------------------------------------------

namespace {

constexpr int kLayers = 2, kHeads = 4, kKvHeads = 2, kDim = 8;
constexpr int64_t kT = 40, kC = 32, kWindow = 8;  // layer 1 is a sliding-window layer: its cache is [24, 32)

/// A small dump; with `obs` the sequences carry observation queries at C-5 .. C-1.
std::string write_dump(const std::string& path, bool obs, uint64_t seed) {
  kvb::DumpAttrs a;
  a.model = "test:obs";
  a.source = "test_obs_run";
  a.shape = kvb::ModelShape{kLayers, kHeads, kKvHeads, kDim};
  a.orig_dtype = "float32";
  kvb::WriterOptions wo;
  wo.dtype = kvb::DType::kFloat32;
  kvb::KvDumpWriter w(path, a, wo);
  kvb::Rng rng(seed);
  for (int s = 0; s < 2; ++s) {
    kvb::SequenceData sd;
    sd.id = fmt::format("s{}", s);
    sd.n_tokens = kT;
    sd.context_len = kC;
    for (int64_t q = kC; q < kT; ++q) sd.query_positions.push_back(q);
    if (obs)
      for (int64_t p = kC - 5; p < kC; ++p) sd.obs_positions.push_back(p);
    for (int l = 0; l < kLayers; ++l) {
      kvb::SequenceData::Layer L;
      auto fill = [&](std::vector<float>& v, size_t n) {
        v.resize(n);
        for (auto& x : v) x = static_cast<float>(rng.normal());
      };
      fill(L.keys, size_t{kKvHeads} * kT * kDim);
      fill(L.values, size_t{kKvHeads} * kT * kDim);
      fill(L.queries, size_t{kHeads} * (kT - kC) * kDim);
      if (obs) fill(L.obs_queries, size_t{kHeads} * 5 * kDim);
      L.sliding_window = l == 1 ? kWindow : 0;
      sd.layers.push_back(std::move(L));
    }
    w.write_sequence(sd);
  }
  w.close();
  return path;
}

struct TmpDir {
  std::string dir;
  TmpDir() {
    dir = (fs::temp_directory_path() / fmt::format("kvb_test_obs_run_{}", static_cast<long>(::getpid()))).string();
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~TmpDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string operator/(const std::string& n) const { return dir + "/" + n; }
};

kvb::run::DatasetPlan plan_of(const kvb::DatasetSpec& spec) {
  kvb::run::DatasetPlan D;
  D.spec = &spec;
  D.reader = std::make_unique<kvb::KvDumpReader>(spec.path);
  D.eval_seqs = {0, 1};
  D.layers = {0, 1};
  return D;
}

kvb::run::Cell cell_of(const kvb::CodecEntry& e, size_t dataset) {
  kvb::run::Cell c;
  c.plan.dataset = dataset;
  c.plan.entry = &e;
  c.plan.label = e.info.name;
  return c;
}

/// Encodes through fp16 and records what each encode saw.
class ObsProbe : public kvb::Codec {
 public:
  struct Seen {
    int layer;
    int64_t tokens;
    kvb::ObsQueries obs;
  };
  explicit ObsProbe(const kvb::ModelShape& shape) {
    const kvb::CodecEntry& fp16 = kvb::registry().at("fp16");
    inner_ = fp16.make_cpu(kvb::resolve_params(fp16.info.params, kvb::Json::object(), "fp16"), shape);
  }
  std::unique_ptr<kvb::EncodedLayer> encode(int layer, const kvb::LayerKV& kv, const kvb::EncodedLayer* prev,
                                            const kvb::CodecContext& ctx) const override {
    {
      std::lock_guard<std::mutex> g(mu_);
      seen_.push_back({layer, kv.tokens, kv.obs});
    }
    return inner_->encode(layer, kv, prev, ctx);
  }
  std::vector<Seen> seen() const {
    std::lock_guard<std::mutex> g(mu_);
    return seen_;
  }

 private:
  std::unique_ptr<kvb::Codec> inner_;
  mutable std::mutex mu_;
  mutable std::vector<Seen> seen_;
};

}  // namespace

TEST(ObsSkip, CellsOfDatasetsWithoutObsAreSkipped) {
  TmpDir dir;
  std::vector<kvb::DatasetSpec> specs(2);
  specs[0].path = write_dump(dir / "with_obs.h5", true, 1);
  specs[1].path = write_dump(dir / "without_obs.h5", false, 2);
  std::vector<kvb::run::DatasetPlan> datasets;
  for (const auto& s : specs) datasets.push_back(plan_of(s));
  const kvb::CodecEntry needs = hand_made_entry("snapkv-test", true);
  const kvb::CodecEntry plain = hand_made_entry("plain-test", false);
  std::vector<kvb::run::Cell> cells;
  for (size_t d = 0; d < 2; ++d) {
    cells.push_back(cell_of(needs, d));
    cells.push_back(cell_of(plain, d));
  }
  auto already = cell_of(needs, 1);  // a cell skipped for another reason keeps that reason
  already.outcome.set(kvb::CellStatus::kSkipped, "no configuration fits 1 bit");
  cells.push_back(std::move(already));

  kvb::run::skip_cells_without_obs(cells, datasets);
  EXPECT_TRUE(cells[0].outcome.ok()) << cells[0].outcome.reason;
  EXPECT_TRUE(cells[1].outcome.ok());
  EXPECT_EQ(cells[2].outcome.status, kvb::CellStatus::kSkipped);
  EXPECT_TRUE(has(cells[2].outcome.reason, "snapkv-test")) << cells[2].outcome.reason;
  EXPECT_TRUE(has(cells[2].outcome.reason, specs[1].path)) << cells[2].outcome.reason;
  EXPECT_TRUE(has(cells[2].outcome.reason, "--obs-window")) << cells[2].outcome.reason;
  EXPECT_TRUE(cells[3].outcome.ok());
  EXPECT_EQ(cells[4].outcome.reason, "no configuration fits 1 bit");
}

TEST(ObsRun, EncodeSeesCacheRelativeObservationQueries) {
  TmpDir dir;
  std::vector<kvb::DatasetSpec> specs(2);
  specs[0].path = write_dump(dir / "with_obs.h5", true, 3);
  specs[1].path = write_dump(dir / "without_obs.h5", false, 4);
  for (size_t d = 0; d < specs.size(); ++d) {
    SCOPED_TRACE(specs[d].path);
    const bool with_obs = d == 0;
    kvb::run::DatasetPlan D = plan_of(specs[d]);
    kvb::Config cfg;
    cfg.throughput = false;  // encode once per (sequence, layer)
    cfg.topk = 4;            // <= the sliding-window layer's 8 cached tokens
    const kvb::CodecEntry entry = hand_made_entry("probe", false);
    kvb::run::Cell c = cell_of(entry, d);
    auto probe = std::make_unique<ObsProbe>(D.reader->attrs().shape);
    const ObsProbe* p = probe.get();
    c.live.codec = std::move(probe);
    kvb::run::Batch b;
    b.dataset = d;
    b.cells = {&c};
    b.streams = true;
    kvb::run::evaluate_batch(cfg, D, b, nullptr, [](const std::string&) {});
    ASSERT_TRUE(c.outcome.ok()) << c.outcome.reason;
    const auto seen = p->seen();
    ASSERT_EQ(seen.size(), 4u);  // 2 sequences x 2 layers
    for (size_t i = 0; i < seen.size(); ++i) {
      const size_t si = i / 2;
      const auto& s = seen[i];
      SCOPED_TRACE(fmt::format("sequence {} layer {}", si, s.layer));
      const int64_t t0 = s.layer == 1 ? kC - kWindow : 0;
      EXPECT_EQ(s.tokens, kC - t0);
      if (!with_obs) {
        EXPECT_TRUE(s.obs.empty());
        continue;
      }
      ASSERT_EQ(s.obs.n, 5);
      std::vector<int64_t> want;
      for (int64_t q = kC - 5; q < kC; ++q) want.push_back(q - t0);
      EXPECT_EQ(s.obs.positions, want);
      for (int64_t pos : s.obs.positions) EXPECT_LT(pos, s.tokens) << "a position must index the cache";
      const kvb::ObsQueries direct = D.reader->read_obs(si, s.layer, 0);
      EXPECT_EQ(s.obs.q, direct.q);
      EXPECT_EQ(s.obs.heads, kHeads);
      EXPECT_EQ(s.obs.head_dim, kDim);
    }
  }
}
