#pragma once
// Helpers of the sweep tests (test_shard.cpp, test_resume_strict.cpp): the small sweep config, the parts of
// results that must not move between runs, and a kvbench child process to interrupt.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <string>
#include <vector>

#include "test_util.h"

namespace kvbtest {

inline nlohmann::json load_json(const std::string& p) { return nlohmann::json::parse(slurp(p)); }

/// Cells keyed by (dataset, codec, params): fidelity, storage and status, the parts that must not move.
inline std::map<std::string, nlohmann::json> essentials(const nlohmann::json& doc) {
  std::map<std::string, nlohmann::json> m;
  for (const auto& c : doc.at("cells")) {
    nlohmann::json e = {{"status", c.at("status")}, {"label", c.at("label")}};
    if (c.at("status") == "ok") {
      e["fidelity"] = c.at("fidelity");
      e["storage"] = c.at("storage");
      e["per_layer"] = c.at("per_layer");
    }
    m[c.at("dataset").get<std::string>() + "|" + c.at("codec").get<std::string>() + "|" + c.at("params").dump()] = e;
  }
  return m;
}

/// results.json without what depends on the run rather than on the sweep: when and how long it ran
/// (run.started_utc, run.duration_s), its command line (run.argv: the output directory) and how many cells
/// it resumed (run.resumed_cells). With throughput off (the sweeps here) no cell holds a timing, so
/// everything else — every cell's fidelity, storage, per_layer, codec_report, in order — must be equal.
inline nlohmann::json run_independent(nlohmann::json doc) {
  for (const char* k : {"started_utc", "duration_s", "argv", "resumed_cells"}) doc.at("run").erase(k);
  return doc;
}

/// Generates the tiny synthetic dump tiny.h5 into `tmp` and writes the sweep config <name>.json over it:
/// fp16, fp8, int at 3, 5 and 9 bits, kivi at 3 and 5 bits (7 cells), throughput off.
inline void write_ci_config(const TempDir& tmp, const std::string& name, int seed) {
  auto r = kvbench("gen --model-like tiny --seed 3 --out '" + (tmp / "tiny.h5") + "'", tmp);
  ASSERT_EQ(r.code, 0) << describe(r);
  const nlohmann::json cfg = {{"name", name},
                              {"datasets", {{{"path", tmp / "tiny.h5"}, {"max_queries", 4}}}},
                              {"codecs",
                               {{{"codec", "fp16"}},
                                {{"codec", "fp8"}},
                                {{"codec", "int"}, {"bits", {3, 5, 9}}},
                                {{"codec", "kivi"}, {"bits", {3, 5}}}}},
                              {"metrics", {{"topk", 8}}},
                              {"throughput", false},
                              {"seed", seed}};
  spit(tmp.path / (name + ".json"), cfg.dump());
}

/// Starts `kvbench ARGS` as a child with stdout and stderr to /dev/null and SIGINT, SIGTERM at their
/// default action (a shell may have left them ignored); returns its PID.
inline pid_t spawn_kvbench(const std::vector<std::string>& args) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  ::signal(SIGINT, SIG_DFL);
  ::signal(SIGTERM, SIG_DFL);
  ::freopen("/dev/null", "w", stdout);
  ::freopen("/dev/null", "w", stderr);
  std::vector<char*> argv{const_cast<char*>(KVB_BINARY)};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execv(KVB_BINARY, argv.data());
  ::_exit(127);
}

/// waitpid's status of `pid`.
inline int wait_status(pid_t pid) {
  int st = 0;
  ::waitpid(pid, &st, 0);
  return st;
}

}  // namespace kvbtest
