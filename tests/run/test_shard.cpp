// Per-cell persistence, --resume, --shard K/N and `kvbench merge`, through the executable.
#include <chrono>
#include <thread>

#include "sweep_util.h"

namespace {

using kvbtest::TempDir;
using nlohmann::json;
namespace fs = std::filesystem;

using kvbtest::essentials;
using kvbtest::write_ci_config;
json load(const std::string& p) { return kvbtest::load_json(p); }

TEST(Shard, TwoShardsMergedEqualUnsharded) {
  TempDir tmp("shard");
  write_ci_config(tmp, "sw", 7);
  auto r = kvbtest::kvbench("run '" + (tmp / "sw.json") + "' -q --output '" + (tmp / "full") + "'", tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  for (int k : {1, 2}) {
    r = kvbtest::kvbench("run '" + (tmp / "sw.json") + "' -q --shard " + std::to_string(k) + "/2 --output '" +
                             (tmp / ("sw-shard" + std::to_string(k))) + "'",
                         tmp);
    ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
    const json d = load(tmp / ("sw-shard" + std::to_string(k)) + "/results.json");
    EXPECT_EQ(d.at("run").at("shard"), (json{{"k", k}, {"n", 2}}));
    for (const auto& i : d.at("run").at("cell_indices")) EXPECT_EQ(i.get<int>() % 2, k - 1);
    EXPECT_EQ(d.at("cells").size(), k == 1 ? 4u : 3u);  // 7 cells, every other one
  }
  r = kvbtest::kvbench("merge '" + (tmp / "sw-shard1") + "' '" + (tmp / "sw-shard2") + "'", tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  ASSERT_TRUE(fs::exists(tmp / "sw-shard1-merged/results.csv")) << kvbtest::describe(r);
  const json full = load(tmp / "full/results.json"), merged = load(tmp / "sw-shard1-merged/results.json");
  EXPECT_FALSE(merged.at("run").contains("shard"));
  EXPECT_EQ(merged.at("cells").size(), full.at("cells").size());
  EXPECT_EQ(essentials(merged), essentials(full));
  EXPECT_EQ(merged.at("summary"), full.at("summary"));
  // Same cell order as the unsharded run.
  for (size_t i = 0; i < full.at("cells").size(); ++i)
    EXPECT_EQ(merged.at("cells")[i].at("label"), full.at("cells")[i].at("label"));
  r = kvbtest::kvbench("compare '" + (tmp / "full") + "' '" + (tmp / "sw-shard1-merged") + "' --fidelity-tol 0", tmp);
  EXPECT_EQ(r.code, 0) << kvbtest::describe(r);
  EXPECT_NE(r.out.find("no changes"), std::string::npos) << r.out;

  // A shard missing: refused, naming the missing cells.
  r = kvbtest::kvbench("merge '" + (tmp / "sw-shard1") + "' --output '" + (tmp / "m1") + "'", tmp);
  EXPECT_EQ(r.code, 2) << kvbtest::describe(r);
  EXPECT_NE(r.err.find("indices 1, 3, 5 "), std::string::npos) << r.err;
  // The same shard twice: overlapping.
  r = kvbtest::kvbench("merge '" + (tmp / "sw-shard1") + "' '" + (tmp / "sw-shard1") + "' '" + (tmp / "sw-shard2") +
                           "' --output '" + (tmp / "m2") + "'",
                       tmp);
  EXPECT_EQ(r.code, 2) << kvbtest::describe(r);
  EXPECT_NE(r.err.find("overlapping"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp / "m2/results.json"));
  // Bad --shard values are usage errors.
  for (const char* bad : {"0/2", "3/2", "1", "a/b", "1/0"}) {
    r = kvbtest::kvbench("run '" + (tmp / "sw.json") + "' -q --shard " + bad + " --output '" + (tmp / "bad") + "'", tmp);
    EXPECT_EQ(r.code, 2) << bad << "\n" << kvbtest::describe(r);
  }
}

TEST(Shard, MergeRefusesMismatchedConfigs) {
  TempDir tmp("shardmm");
  write_ci_config(tmp, "a", 7);
  // Same sweep with another seed: a different resolved config, so a different run_key.
  json other = load(tmp / "a.json");
  other["seed"] = 8;
  kvbtest::spit(tmp.path / "b.json", other.dump());
  auto r = kvbtest::kvbench("run '" + (tmp / "a.json") + "' -q --shard 1/2 --output '" + (tmp / "a1") + "'", tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  r = kvbtest::kvbench("run '" + (tmp / "b.json") + "' -q --shard 2/2 --output '" + (tmp / "b2") + "'", tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  r = kvbtest::kvbench("merge '" + (tmp / "a1") + "' '" + (tmp / "b2") + "' --output '" + (tmp / "m") + "'", tmp);
  EXPECT_EQ(r.code, 2) << kvbtest::describe(r);
  EXPECT_NE(r.err.find("run_key"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(tmp / "a1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(tmp / "b2"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp / "m/results.json"));
  // --resume ignores records of another config: nothing is resumed from a1 when running b there.
  r = kvbtest::kvbench("run '" + (tmp / "b.json") + "' -q --shard 1/2 --resume --output '" + (tmp / "a1") + "'", tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  EXPECT_NE(r.err.find("resumed 0 cells"), std::string::npos) << r.err;
}

TEST(Shard, KilledRunResumes) {
  TempDir tmp("shardkill");
  auto r = kvbtest::kvbench("gen --model-like llama3-8b --layers 2 --tokens 2112 --queries 8 --seed 5 --out '" +
                                (tmp / "big.h5") + "'",
                            tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  const json cfg = {{"name", "kill"},
                    {"datasets", {{{"path", tmp / "big.h5"}}}},
                    {"codecs",
                     {{{"codec", "fp16"}},
                      {{"codec", "int"}, {"bits", {3, 5}}},
                      {{"codec", "kivi"}, {"bits", {3, 5}}},
                      {{"codec", "fp8"}}}},
                    {"throughput", false},
                    {"seed", 3}};
  kvbtest::spit(tmp.path / "cfg.json", cfg.dump());
  const std::string out = tmp / "out";

  const pid_t pid = kvbtest::spawn_kvbench({"run", tmp / "cfg.json", "-q", "--threads", "1", "--output", out});
  ASSERT_GT(pid, 0);
  // Poll until at least one cell is persisted; every file present must parse at every poll.
  bool killed = false;
  int polls = 0;
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60)) {
    ++polls;
    size_t n = 0;
    std::error_code ec;
    if (fs::exists(out + "/cells", ec)) {
      for (const auto& e : fs::directory_iterator(out + "/cells", ec)) {
        const std::string name = e.path().filename().string();
        if (e.path().extension() != ".json") continue;  // atomic writes go through *.json.tmp<PID>
        ++n;
        EXPECT_TRUE(json::accept(kvbtest::slurp(e.path()))) << name << " is not valid JSON (truncated?)";
      }
    }
    if (n >= 1) {
      ::kill(pid, SIGKILL);
      killed = true;
      break;
    }
    int st = 0;
    if (::waitpid(pid, &st, WNOHANG) == pid) break;  // finished before any poll saw a cell: too fast
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const int st = kvbtest::wait_status(pid);
  ASSERT_TRUE(killed) << "the run finished before the test could kill it";
  ASSERT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << "the run had finished already (status " << st << ")";
  EXPECT_FALSE(fs::exists(out + "/results.json")) << "killed mid-sweep, yet results.json exists";
  size_t persisted = 0;
  for (const auto& e : fs::directory_iterator(out + "/cells"))
    if (e.path().extension() == ".json") ++persisted;
  ASSERT_GE(persisted, 1u);
  ASSERT_LT(persisted, 6u) << "the run had finished every cell";

  r = kvbtest::kvbench("run '" + (tmp / "cfg.json") + "' -q --resume --output '" + out + "'", tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  EXPECT_NE(r.err.find("resumed " + std::to_string(persisted) + " cells"), std::string::npos) << r.err;
  const json resumed = load(out + "/results.json");
  EXPECT_EQ(resumed.at("run").at("resumed_cells").get<size_t>(), persisted);

  r = kvbtest::kvbench("run '" + (tmp / "cfg.json") + "' -q --output '" + (tmp / "ref") + "'", tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  const json ref = load(tmp / "ref/results.json");
  EXPECT_EQ(essentials(resumed), essentials(ref));
  EXPECT_EQ(resumed.at("datasets")[0].at("ref_out_check"), ref.at("datasets")[0].at("ref_out_check"));
  r = kvbtest::kvbench("compare '" + (tmp / "ref") + "' '" + out + "' --fidelity-tol 0", tmp);
  EXPECT_EQ(r.code, 0) << kvbtest::describe(r);
  EXPECT_NE(r.out.find("no changes"), std::string::npos) << r.out;
  (void)polls;
}

}  // namespace
