// lookat through `kvbench run`: the runner fits it on the calibration sequence and evaluates the other one
// (never the same data), and a configuration that would fit on the evaluated sequence is skipped per cell.
#include <gtest/gtest.h>

#include <set>

#include "test_util.h"

namespace {

using json = nlohmann::json;
using kvbtest::TempDir;

void make_dump(const TempDir& tmp) {
  const auto r = kvbtest::kvbench("gen -o '" + (tmp / "d.h5") +
                                      "' --model-like tiny --layers 2 --tokens 300 --queries 8 --sequences 2 --seed 4",
                                  tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
}

json run(const TempDir& tmp, const std::string& calibration, int* code) {
  kvbtest::spit(tmp / "c.json", R"({"name": "lookat", "datasets": [{"path": "d.h5", "max_queries": 4}], )" + calibration +
                                    R"("codecs": [{"codec": "lookat", "preset": "paper-4", "params": {"iters": 5}},
                                                  {"codec": "lookat", "bits": [3], "params": {"iters": 5}}],
                                    "seed": 3, "repeats": 1, "min_time_s": 0.0})");
  const auto r = kvbtest::kvbench("run '" + (tmp / "c.json") + "' -o '" + (tmp / "out") + "' --device cpu -q", tmp);
  *code = r.code;
  const std::string text = kvbtest::slurp(tmp.path / "out" / "results.json");
  EXPECT_FALSE(text.empty()) << kvbtest::describe(r);
  return text.empty() ? json::object() : json::parse(text);
}

TEST(LookatRun, CalibratesOnOneSequenceAndEvaluatesTheOther) {
  TempDir tmp("lookat-run");
  make_dump(tmp);
  int code = -1;
  const json doc = run(tmp, R"("calibration": {"sequences": 1}, )", &code);
  ASSERT_EQ(code, 0) << doc.dump(1);
  const json& ds = doc.at("datasets")[0];
  std::set<std::string> eval, cal;
  for (const auto& s : ds.at("evaluated_sequences")) eval.insert(s.at("id").get<std::string>());
  for (const auto& s : ds.at("calibration_sequences")) cal.insert(s.get<std::string>());
  ASSERT_EQ(cal.size(), 1u);
  ASSERT_EQ(eval.size(), 1u);
  EXPECT_EQ(eval.count(*cal.begin()), 0u) << "calibration and evaluation sequences overlap";
  for (const auto& c : doc.at("cells")) {
    SCOPED_TRACE(c.dump());
    EXPECT_EQ(c.at("status"), "ok");
    EXPECT_EQ(c.at("calibration").at("overlaps_evaluation"), false);
    for (const auto& s : c.at("calibration").at("sequences")) EXPECT_EQ(eval.count(s.get<std::string>()), 0u);
  }
}

TEST(LookatRun, FittingOnTheEvaluatedSequenceIsRefused) {
  TempDir tmp("lookat-overlap");
  make_dump(tmp);
  int code = -1;
  // No calibration sequence: the runner fits on the evaluated sequences; lookat refuses to encode them and
  // the runner records the cells as skipped with the reason (the run itself completes).
  const json doc = run(tmp, R"("calibration": {"sequences": 0}, )", &code);
  EXPECT_EQ(code, 0);
  ASSERT_EQ(doc.at("cells").size(), 2u);
  for (const auto& c : doc.at("cells")) {
    SCOPED_TRACE(c.dump());
    EXPECT_EQ(c.at("status"), "skipped");
    EXPECT_NE(c.at("reason").get<std::string>().find("must not overlap"), std::string::npos);
  }
}

}  // namespace
