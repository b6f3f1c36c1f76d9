// The acceptance numbers of the foundation issue on a generated llama-like dump (head_dim 128, C = 4096),
// and a dump written by another tool (h5py) running unchanged.
#include <gtest/gtest.h>

#include <map>

#include "test_util.h"

namespace {

using kvbtest::TempDir;
using nlohmann::json;
namespace fs = std::filesystem;

std::map<std::string, json> by_label(const json& doc) {
  std::map<std::string, json> m;
  for (const auto& c : doc.at("cells")) m[c.at("label").get<std::string>()] = c;
  return m;
}

double cosine_mean(const json& c) { return c.at("fidelity").at("cosine").at("mean").get<double>(); }

TEST(Acceptance, LlamaLikeFidelityAndStorage) {
  TempDir tmp("accept");
  // One layer of Llama-3-8B shapes: 32 heads, 8 KV heads, head_dim 128, C = 4096, 16 queries.
  auto r = kvbtest::kvbench("gen --model-like llama3-8b --layers 1 --tokens 4112 --queries 16 --sequences 1 --seed 11 --out '" +
                                (tmp / "ll.h5") + "'",
                            tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  const json cfg = {{"name", "accept"},
                    {"datasets", {{{"path", tmp / "ll.h5"}, {"max_queries", 4}}}},
                    {"codecs",
                     {{{"codec", "fp16"}},
                      {{"codec", "int"}, {"bits", {3, 5, 9}}, {"params", {{"group_size", 32}}}},
                      {{"codec", "kivi"}, {"bits", {3, 5}}}}},
                    {"throughput", false},
                    {"seed", 3}};
  kvbtest::spit(tmp.path / "cfg.json", cfg.dump());
  r = kvbtest::kvbench("run '" + (tmp / "cfg.json") + "' --output '" + (tmp / "out") + "'", tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  const json doc = json::parse(kvbtest::slurp(tmp.path / "out" / "results.json"));
  EXPECT_EQ(doc["datasets"][0]["ref_out_check"]["status"], "passed");
  auto cells = by_label(doc);
  for (const char* l : {"fp16", "int2-g32", "int4-g32", "int8-g32", "kivi2-g32-r128", "kivi4-g32-r128"})
    ASSERT_TRUE(cells.count(l)) << l << " missing; labels: " << doc["cells"].dump().substr(0, 400);
  EXPECT_GE(cosine_mean(cells["fp16"]), 0.99999);
  EXPECT_GE(cosine_mean(cells["int8-g32"]), 0.999);
  EXPECT_GT(cosine_mean(cells["int8-g32"]), cosine_mean(cells["int4-g32"]));
  EXPECT_GT(cosine_mean(cells["int4-g32"]), cosine_mean(cells["int2-g32"]));
  EXPECT_GT(cosine_mean(cells["kivi4-g32-r128"]), cosine_mean(cells["kivi2-g32-r128"]));
  EXPECT_NEAR(cells["int4-g32"]["storage"]["bits_per_element"].get<double>(), 5.0, 1e-9);
  const double kivi2 = cells["kivi2-g32-r128"]["storage"]["bits_per_element"].get<double>();
  EXPECT_GE(kivi2, 3.0);
  EXPECT_LE(kivi2, 3.3);
  EXPECT_GT(cells["kivi2-g32-r128"]["storage"]["buffer_bytes"].get<double>(), 0.0);  // fp16 windows, reported apart
  EXPECT_EQ(cells["kivi2-g32-r128"]["storage"]["source"], "measured");
}

TEST(Acceptance, H5pyWrittenDumpRunsUnchanged) {
  TempDir tmp("h5py");
  const std::string py = "/usr/bin/python3";
  if (std::system((py + " -c 'import h5py, numpy' >/dev/null 2>&1").c_str()) != 0)
    GTEST_SKIP() << "h5py is not installed for /usr/bin/python3 (scripts/setup.sh installs python3-h5py)";
  const std::string cmd = py + " '" + KVB_SOURCE_DIR + "/scripts/make_h5py_dump.py' '" + (tmp / "py.h5") + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto r = kvbtest::kvbench("inspect '" + (tmp / "py.h5") + "'", tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  const json cfg = {{"name", "h5py"},
                    {"datasets", {{{"path", tmp / "py.h5"}}}},
                    {"codecs", {{{"codec", "fp16"}}, {{"codec", "int"}, {"bits", {5}}}, {{"codec", "kivi"}, {"bits", {3}}}}},
                    {"metrics", {{"topk", 4}}},
                    {"throughput", false}};
  kvbtest::spit(tmp.path / "cfg.json", cfg.dump());
  r = kvbtest::kvbench("run '" + (tmp / "cfg.json") + "' --output '" + (tmp / "out") + "'", tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  const json doc = json::parse(kvbtest::slurp(tmp.path / "out" / "results.json"));
  EXPECT_EQ(doc["datasets"][0]["ref_out_check"]["status"], "passed") << doc["datasets"][0].dump();
  for (const auto& c : doc["cells"]) EXPECT_EQ(c["status"], "ok") << c.dump();
}

}  // namespace
