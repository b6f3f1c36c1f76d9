// The typed results contract (src/kvb/report/results.h): reading a results.json and writing it back gives
// the same document, so the runner, merge and --resume (which all go through ResultDoc / CellRecord) keep
// the committed shape; and the metric registry drives the fidelity block.
#include <gtest/gtest.h>

#include <filesystem>

#include "kvb/core/error.h"
#include "kvb/metrics/metrics.h"
#include "kvb/report/results.h"
#include "kvb/report/results_csv.h"
#include "test_util.h"

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

json baseline() { return json::parse(kvbtest::slurp(fs::path(KVB_SOURCE_DIR) / "results" / "baselines" / "ci.json")); }

TEST(Results, BaselineRoundTripsExactly) {
  const json b = baseline();
  const kvb::ResultDoc doc = kvb::ResultDoc::from_json(b, "ci.json");
  EXPECT_EQ(doc.to_json(), b);
  EXPECT_EQ(doc.to_json().dump(2), b.dump(2));
  for (size_t i = 0; i < b["cells"].size(); ++i)
    EXPECT_EQ(kvb::CellRecord::from_json(b["cells"][i], "cell").to_json(), b["cells"][i]) << i;
}

TEST(Results, DatasetResultRoundTrips) {
  const json d = baseline()["datasets"][0];
  const json part{{"ref_out_check", d["ref_out_check"]}, {"reference_throughput", d["reference_throughput"]}};
  EXPECT_EQ(kvb::DatasetResult::from_json(part, "d").to_json(), part);
  json not_run = part;
  not_run["ref_out_check"] = {{"status", "not run"}, {"reason", "the dump has no ref_out"}};
  not_run["reference_throughput"] = nullptr;
  EXPECT_EQ(kvb::DatasetResult::from_json(not_run, "d").to_json(), not_run);
}

TEST(Results, MetricsBlockIsTheRegistry) {
  const json b = baseline();
  EXPECT_EQ(kvb::to_json(kvb::registry_metrics()), b["metrics"]);
  for (const auto& m : kvb::metrics::all_metrics()) EXPECT_NE(m.value, nullptr) << m.name;
}

TEST(Results, WrongTypesAreDataErrors) {
  json b = baseline();
  b["cells"][0]["storage"]["bytes_per_token"] = "many";
  try {
    (void)kvb::ResultDoc::from_json(b, "x.json");
    FAIL() << "no DataError";
  } catch (const kvb::DataError& e) {
    EXPECT_NE(std::string(e.what()).find("x.json.cells[0].storage.bytes_per_token"), std::string::npos) << e.what();
  }
  b = baseline();
  b["cells"][0]["status"] = "fine";
  EXPECT_THROW((void)kvb::ResultDoc::from_json(b, "x.json"), kvb::DataError);
}

TEST(Results, CsvHasOneRowPerCell) {
  const kvb::ResultDoc doc = kvb::ResultDoc::from_json(baseline(), "ci.json");
  const std::string csv = kvb::results_csv(doc);
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), static_cast<std::ptrdiff_t>(doc.cells.size() + 1));
  EXPECT_EQ(csv.rfind("dataset,codec,label,params,bits_target,status,reason,device,bits_per_element,", 0), 0u);
  // Appended columns keep their order (docs/results.md): e2e's, then the roofline's, then queries_per_call.
  const auto& cols = kvb::csv_columns();
  ASSERT_GE(cols.size(), 4u);
  EXPECT_EQ(cols[cols.size() - 4], "e2e_decode_ratio_vs_fp16");
  EXPECT_EQ(cols[cols.size() - 3], "roofline_fraction");
  EXPECT_EQ(cols[cols.size() - 2], "roofline_bound");
  EXPECT_EQ(cols.back(), "queries_per_call");
}

}  // namespace
