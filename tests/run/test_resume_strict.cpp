// --resume against hostile record directories and interrupted runs (issue 20), through the executable:
// a tampered cells/ or datasets/ record is recomputed and named on stderr, kill -9 at random points of a
// sweep always resumes to the uninterrupted results, and temporary files never outlive an interrupted write.
#include <sys/time.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <random>
#include <regex>
#include <thread>

#include <fmt/format.h>

#include "sweep_util.h"

namespace {

using kvbtest::TempDir;
using nlohmann::json;
namespace fs = std::filesystem;

std::string q(const std::string& s) { return "'" + s + "'"; }

/// How often `needle` occurs in `hay`.
size_t count_of(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + needle.size())) ++n;
  return n;
}

/// Every file under `dir` whose name holds ".tmp" (a temporary file of an atomic write).
std::vector<std::string> temp_files(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().filename().string().find(".tmp") != std::string::npos) out.push_back(it->path().string());
  return out;
}

/// results.json of `dir` equals `ref`'s except in the run-dependent fields (sweep_util.h run_independent), and
/// results.csv is the same bytes.
void expect_same_results(const std::string& dir, const std::string& ref) {
  ASSERT_TRUE(fs::exists(dir + "/results.json")) << dir;
  EXPECT_EQ(kvbtest::run_independent(kvbtest::load_json(dir + "/results.json")),
            kvbtest::run_independent(kvbtest::load_json(ref + "/results.json")));
  EXPECT_EQ(kvbtest::slurp(dir + "/results.csv"), kvbtest::slurp(ref + "/results.csv"));
}

void edit_json(const std::string& path, const std::function<void(json&)>& f) {
  json j = kvbtest::load_json(path);
  f(j);
  kvbtest::spit(path, j.dump(2));
}

/// A PID no process has (a child that has exited and been reaped).
pid_t dead_pid() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  kvbtest::wait_status(pid);
  return pid;
}

struct Tamper {
  std::string name;
  std::function<void(const std::string& dir)> apply;  ///< on a copy of a finished run's directory
  std::vector<std::string> stderr_has;                ///< e.g. "cells/5.json: recomputed: index 2"
  int recomputed_cells;                               ///< of the sweep's 7
  int recomputed_datasets = 0;                        ///< of its 1
};

std::vector<Tamper> tampers() {
  auto cell = [](const std::string& dir, int i) { return dir + "/cells/" + std::to_string(i) + ".json"; };
  auto edit_cell = [cell](int i, std::function<void(json&)> f) {
    return [cell, i, f](const std::string& dir) { edit_json(cell(dir, i), f); };
  };
  return {
      {"duplicated file",
       [cell](const std::string& d) { fs::copy_file(cell(d, 2), cell(d, 5), fs::copy_options::overwrite_existing); },
       {"cells/5.json: recomputed: index 2 in the file, expected 5"},
       1},
      {"swapped pair",
       [cell](const std::string& d) {
         fs::rename(cell(d, 2), d + "/x");
         fs::rename(cell(d, 3), cell(d, 2));
         fs::rename(d + "/x", cell(d, 3));
       },
       {"cells/2.json: recomputed: index 3 in the file, expected 2",
        "cells/3.json: recomputed: index 2 in the file, expected 3"},
       2},
      {"swapped pair, indices edited to match",
       [cell](const std::string& d) {
         json a = kvbtest::load_json(cell(d, 2)), b = kvbtest::load_json(cell(d, 3));
         std::swap(a, b);
         a["index"] = 2;
         b["index"] = 3;
         kvbtest::spit(cell(d, 2), a.dump());
         kvbtest::spit(cell(d, 3), b.dump());
       },
       {"cells/2.json: recomputed: cell.label \"int", "but cell 2 of the plan has",
        "cells/3.json: recomputed: cell.label"},
       2},
      {"null metric in an ok cell",
       edit_cell(1, [](json& j) { j["cell"]["fidelity"]["kl"] = nullptr; }),
       {"cells/1.json: recomputed: cell.fidelity.kl: null, and not_applicable gives no reason"},
       1},
      {"null cosine in an ok cell",
       edit_cell(0, [](json& j) { j["cell"]["fidelity"]["cosine"] = nullptr; }),
       {"cells/0.json: recomputed: cell.fidelity.cosine: null"},
       1},
      {"string metric",
       edit_cell(3, [](json& j) { j["cell"]["fidelity"]["rel_l2"] = "0.01"; }),
       {"cells/3.json: recomputed: cell.fidelity.rel_l2: expected an object, found string"},
       1},
      {"string mean",
       edit_cell(4, [](json& j) { j["cell"]["fidelity"]["cosine"]["mean"] = "0.99"; }),
       {"cells/4.json: recomputed: cell.fidelity.cosine.mean: expected a number, found string"},
       1},
      {"null mean",
       edit_cell(5, [](json& j) { j["cell"]["fidelity"]["spearman"]["mean"] = nullptr; }),
       {"cells/5.json: recomputed: cell.fidelity.spearman: {"},
       1},
      {"NaN",
       [cell](const std::string& d) {
         const std::string t = kvbtest::slurp(cell(d, 6));
         kvbtest::spit(cell(d, 6), std::regex_replace(t, std::regex("\"mean\": [-0-9.e+]+"), "\"mean\": NaN",
                                                      std::regex_constants::format_first_only));
       },
       {"cells/6.json: recomputed: not valid JSON"},
       1},
      {"number out of range",
       [cell](const std::string& d) {
         const std::string t = kvbtest::slurp(cell(d, 6));
         kvbtest::spit(cell(d, 6), std::regex_replace(t, std::regex("\"mean\": [-0-9.e+]+"), "\"mean\": 1e999",
                                                      std::regex_constants::format_first_only));
       },
       {"cells/6.json: recomputed: "},
       1},
      {"missing storage",
       edit_cell(6, [](json& j) { j["cell"].erase("storage"); }),
       {"cells/6.json: recomputed: cell.storage: missing"},
       1},
      {"missing metric",
       edit_cell(2, [](json& j) { j["cell"]["fidelity"].erase("topk_recall"); }),
       {"cells/2.json: recomputed: cell.fidelity.topk_recall: missing"},
       1},
      {"missing storage field",
       edit_cell(2, [](json& j) { j["cell"]["storage"].erase("bytes_per_token"); }),
       {"cells/2.json: recomputed: cell.storage.bytes_per_token: missing"},
       1},
      {"missing index", edit_cell(2, [](json& j) { j.erase("index"); }), {"cells/2.json: recomputed: no index"}, 1},
      {"wrong index",
       edit_cell(2, [](json& j) { j["index"] = 4; }),
       {"cells/2.json: recomputed: index 4 in the file, expected 2"},
       1},
      {"status of the wrong type",
       edit_cell(1, [](json& j) { j["cell"]["status"] = 1; }),
       {"cells/1.json: recomputed: cell.status: expected a string, found number"},
       1},
      {"status outside the enum",
       edit_cell(1, [](json& j) { j["cell"]["status"] = "done"; }),
       {"cells/1.json: recomputed: cell.status: expected ok, skipped or error, found \"done\""},
       1},
      {"error cell without a reason",
       edit_cell(
           1,
           [](json& j) {
             json& c = j["cell"];
             for (const char* k : {"storage", "fidelity", "not_applicable", "per_layer", "throughput", "codec_report"})
               c.erase(k);
             c["status"] = "error";
           }),
       {"cells/1.json: recomputed: cell.reason: empty"},
       1},
      {"unexpected field",
       edit_cell(0, [](json& j) { j["cell"]["storage"]["bonus"] = 1; }),
       {"cells/0.json: recomputed: cell.storage.bonus: unexpected field"},
       1},
      {"another run's key",
       edit_cell(0, [](json& j) { j["run_key"] = "0123456789abcdef"; }),
       {"cells/0.json: recomputed: run_key \"0123456789abcdef\" is another run's"},
       1},
      {"truncated JSON",
       [cell](const std::string& d) {
         const std::string t = kvbtest::slurp(cell(d, 3));
         kvbtest::spit(cell(d, 3), t.substr(0, t.size() / 2));
       },
       {"cells/3.json: recomputed: not valid JSON"},
       1},
      {"extra unexpected files",
       [cell](const std::string& d) {
         fs::copy_file(cell(d, 0), cell(d, 99));
         kvbtest::spit(d + "/cells/notes.txt", "mine");
       },
       {"cells: left alone 2 files that are no record of this sweep (", "99.json", "notes.txt"},
       0},
      {"dataset record of the wrong type",
       [](const std::string& d) {
         edit_json(d + "/datasets/0.json", [](json& j) { j["dataset"]["ref_out_check"]["max_rel_l2"] = "small"; });
       },
       {"datasets/0.json: recomputed: dataset.ref_out_check.max_rel_l2: expected a number, found string"},
       0,
       1},
      {"dataset record without its check",
       [](const std::string& d) {
         edit_json(d + "/datasets/0.json", [](json& j) { j["dataset"].erase("ref_out_check"); });
       },
       {"datasets/0.json: recomputed: dataset.ref_out_check: missing"},
       0,
       1},
  };
}

TEST(ResumeStrict, TamperedRecordsAreRecomputed) {
  TempDir tmp("resumestrict");
  kvbtest::write_ci_config(tmp, "rs", 7);
  const std::string cfg = tmp / "rs.json", ref = tmp / "ref";
  auto r = kvbtest::kvbench("run " + q(cfg) + " -q --output " + q(ref), tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  const auto cases = tampers();
  int i = 0;
  for (const auto& t : cases) {
    SCOPED_TRACE("tamper: " + t.name);
    const std::string dir = tmp / ("case" + std::to_string(i++));
    fs::copy(ref, dir, fs::copy_options::recursive);
    fs::remove(dir + "/results.json");
    fs::remove(dir + "/results.csv");
    t.apply(dir);
    r = kvbtest::kvbench("run " + q(cfg) + " -q --resume --output " + q(dir), tmp);
    ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
    for (const auto& s : t.stderr_has)
      EXPECT_NE(r.err.find(s), std::string::npos) << "expected: " << s << "\n" << r.err;
    EXPECT_EQ(r.err.find("key not found"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("resumed " + std::to_string(7 - t.recomputed_cells) + " cells"), std::string::npos) << r.err;
    EXPECT_EQ(count_of(r.err, ": recomputed: "), static_cast<size_t>(t.recomputed_cells + t.recomputed_datasets))
        << r.err;
    EXPECT_EQ(kvbtest::load_json(dir + "/results.json").at("run").at("resumed_cells"), 7 - t.recomputed_cells);
    expect_same_results(dir, ref);
  }
}

TEST(ResumeStrict, RecomputedRecordsAreListedBounded) {
  TempDir tmp("resumebound");
  kvbtest::write_ci_config(tmp, "rb", 7);
  const std::string cfg = tmp / "rb.json", ref = tmp / "ref", dir = tmp / "out";
  auto r = kvbtest::kvbench("run " + q(cfg) + " -q --output " + q(ref), tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  fs::copy(ref, dir, fs::copy_options::recursive);
  for (int i = 0; i < 7; ++i) kvbtest::spit(dir + "/cells/" + std::to_string(i) + ".json", "{\"run_key\": ");
  r = kvbtest::kvbench("run " + q(cfg) + " -q --resume --output " + q(dir), tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  EXPECT_EQ(count_of(r.err, ": recomputed: "), 5u) << r.err;  // the first five, then a count
  EXPECT_NE(r.err.find("2 more records recomputed"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("resumed 0 cells"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("(7 records recomputed"), std::string::npos) << r.err;
  EXPECT_LE(count_of(r.err, "\n"), 8u) << r.err;
  expect_same_results(dir, ref);
}

TEST(ResumeStrict, KilledAtRandomPointsResumesToTheSameResults) {
  TempDir tmp("resumekill");
  auto r =
      kvbtest::kvbench("gen --model-like tiny --tokens 4112 --queries 16 --seed 3 --out " + q(tmp / "mid.h5"), tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  // One codecs[] entry per cell: a record is persisted after each, seven points to be killed between.
  json codecs = json::array({{{"codec", "fp16"}}, {{"codec", "fp8"}}});
  for (int b : {3, 5, 9}) codecs.push_back({{"codec", "int"}, {"bits", {b}}});
  for (int b : {3, 5}) codecs.push_back({{"codec", "kivi"}, {"bits", {b}}});
  const json cfg_json = {{"name", "kill"},      {"datasets", {{{"path", tmp / "mid.h5"}, {"max_queries", 8}}}},
                         {"codecs", codecs},    {"metrics", {{"topk", 8}}},
                         {"throughput", false}, {"seed", 7}};
  const std::string cfg = tmp / "kill.json", ref = tmp / "ref";
  kvbtest::spit(cfg, cfg_json.dump());
  const auto t0 = std::chrono::steady_clock::now();
  r = kvbtest::kvbench("run " + q(cfg) + " -q --threads 1 --output " + q(ref), tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  const double sweep_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  const char* env = std::getenv("KVB_KILL_SEED");
  const uint32_t seed = env ? static_cast<uint32_t>(std::strtoul(env, nullptr, 10)) : 20;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> delay_ms(0.0, sweep_ms);
  constexpr int kTrials = 20;
  int mid_sweep = 0, partial = 0;  // kills before results.json; resumes that reused some cells, not all
  for (int trial = 0; trial < kTrials; ++trial) {
    const double delay = delay_ms(rng);
    SCOPED_TRACE(fmt::format("KVB_KILL_SEED={} trial {}: kill -9 after {:.0f} ms of a {:.0f} ms sweep", seed, trial,
                             delay, sweep_ms));
    const std::string out = tmp / ("k" + std::to_string(trial));
    const pid_t pid = kvbtest::spawn_kvbench({"run", cfg, "-q", "--threads", "1", "--output", out});
    ASSERT_GT(pid, 0);
    std::this_thread::sleep_for(std::chrono::microseconds(static_cast<int64_t>(delay * 1000)));
    ::kill(pid, SIGKILL);
    const int st = kvbtest::wait_status(pid);
    if (WIFSIGNALED(st) && !fs::exists(out + "/results.json")) ++mid_sweep;
    r = kvbtest::kvbench("run " + q(cfg) + " -q --threads 1 --resume --output " + q(out), tmp);
    ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
    // Atomic writes: a killed run never leaves a record that does not check.
    EXPECT_EQ(r.err.find(": recomputed: "), std::string::npos) << r.err;
    std::smatch m;
    if (std::regex_search(r.err, m, std::regex("resumed ([0-9]+) cells")) && m[1] != "0" && m[1] != "7") ++partial;
    expect_same_results(out, ref);
    EXPECT_EQ(temp_files(out), std::vector<std::string>{}) << r.err;
  }
  EXPECT_GE(mid_sweep, kTrials / 2) << "too few kills landed inside the sweep (seed " << seed << ")";
  EXPECT_GE(partial, kTrials / 4) << "too few kills landed between two records (seed " << seed << ", " << mid_sweep
                                  << " inside the sweep)";
  std::printf("kill -9 trials: seed %u, %d of %d inside the sweep, %d resumed part of it (sweep %.0f ms)\n", seed,
              mid_sweep, kTrials, partial, sweep_ms);
}

TEST(ResumeStrict, InterruptedGenRemovesItsTemporaryFile) {
  TempDir tmp("geninterrupt");
  for (int sig : {SIGINT, SIGTERM}) {
    SCOPED_TRACE(fmt::format("signal {}", sig));
    const std::string out = tmp / "big.h5";
    const pid_t pid = kvbtest::spawn_kvbench({"gen", "--model-like", "llama3-8b", "--layers", "2", "--tokens", "2112",
                                              "--queries", "8", "-q", "--out", out});
    ASSERT_GT(pid, 0);
    const std::string temp = out + ".tmp" + std::to_string(pid);
    bool seen = false;
    int st = 0;
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30)) {
      if (fs::exists(temp)) {
        seen = true;
        break;
      }
      if (::waitpid(pid, &st, WNOHANG) == pid) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_TRUE(seen) << "gen finished (or failed) before its temporary file was seen; status " << st;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // into the writing
    ::kill(pid, sig);
    st = kvbtest::wait_status(pid);
    EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == sig)
        << "status " << st << " (the default action keeps the exit status)";
    EXPECT_FALSE(fs::exists(temp));
    EXPECT_FALSE(fs::exists(out));
    EXPECT_EQ(temp_files(tmp.path.string()), std::vector<std::string>{});
  }
}

TEST(ResumeStrict, StaleTemporaryFilesAreSwept) {
  TempDir tmp("staletmp");
  const std::string dead = std::to_string(dead_pid()), live = std::to_string(::getpid());
  const std::string out = tmp / "t.h5";
  const std::vector<std::string> stale = {out + ".tmp" + dead, out + ".tmp." + dead};
  const std::vector<std::string> kept = {out + ".tmp" + live, tmp / ("other.h5.tmp" + dead), out + ".tmpx"};
  for (const auto& p : stale) kvbtest::spit(p, "partial");
  for (const auto& p : kept) kvbtest::spit(p, "not gen's");
  // PID 1 is alive, but started after this file was written: not its writer.
  const std::string reused = out + ".tmp1";
  kvbtest::spit(reused, "partial");
  const struct timeval old[2] = {{978307200, 0}, {978307200, 0}};  // 2001-01-01
  ASSERT_EQ(::utimes(reused.c_str(), old), 0);
  auto r = kvbtest::kvbench("gen --model-like tiny -q --out " + q(out), tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  for (const auto& p : stale) {
    EXPECT_FALSE(fs::exists(p)) << p;
    EXPECT_NE(
        r.err.find("removed " + p + ": temporary file of an interrupted write (PID " + dead + " is no longer running)"),
        std::string::npos)
        << r.err;
  }
  for (const auto& p : kept) EXPECT_TRUE(fs::exists(p)) << p << " is not a stale temporary file of " << out;
  if (fs::exists("/proc/1/stat")) {
    EXPECT_FALSE(fs::exists(reused));
    EXPECT_NE(r.err.find("removed " + reused +
                         ": temporary file of an interrupted write (PID 1 now belongs to a process "
                         "started after the file was written)"),
              std::string::npos)
        << r.err;
  }

  // A run's results directory: the records' and results.json's temporary files.
  kvbtest::write_ci_config(tmp, "st", 7);
  const std::string res = tmp / "res";
  fs::create_directories(res + "/cells");
  const std::vector<std::string> run_stale = {res + "/cells/0.json.tmp" + dead, res + "/results.json.tmp" + dead};
  for (const auto& p : run_stale) kvbtest::spit(p, "{\"run_key\"");
  r = kvbtest::kvbench("run " + q(tmp / "st.json") + " -q --output " + q(res), tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  for (const auto& p : run_stale) EXPECT_NE(r.err.find("removed " + p), std::string::npos) << r.err;
  EXPECT_EQ(temp_files(res), std::vector<std::string>{});
}

}  // namespace
