// libFuzzer target: the results readers on arbitrary bytes: compare's loader (load_results_file: read, parse,
// validate_results), ResultDoc::from_json (merge, report, resume), the CSV writer and compare on what they
// accept, and --resume's record files (the bounded parser, then CellRecord/DatasetRecord::from_json and the
// round trip resume.cpp compares; check_cell_file itself needs a planned cell, so it is covered by the
// ResumeStrict tests instead).
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "kvb/core/json_text.h"
#include "kvb/report/compare.h"
#include "kvb/report/results.h"
#include "kvb/report/results_csv.h"
#include "kvb/report/results_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = kvbfuzz::scratch_path("results.json");
  kvbfuzz::write_bytes(path, data, size);
  kvbfuzz::expect_only_kvb_errors([&] {
    const kvb::Json doc = kvb::load_results_file(path);
    const kvb::CompareReport rep = kvb::compare_results(doc, doc, kvb::CompareOptions{}, "BASE", "NEW");
    (void)rep.to_text();
    (void)rep.to_json().dump();
  });
  kvbfuzz::expect_only_kvb_errors([&] {
    // Every reader of results files parses through kvb::parse_json (depth and number limits), so the fuzzer does.
    const kvb::Json j = kvb::parse_json(std::string(reinterpret_cast<const char*>(data), size), path, kvb::ExitCode::kData);
    const kvb::ResultDoc d = kvb::ResultDoc::from_json(j, path);
    (void)kvb::results_csv(d);
    (void)d.to_json().dump();
  });
  // --resume: {"run_key", "index", "cell" | "dataset"} files.
  kvbfuzz::expect_only_kvb_errors([&] {
    const kvb::Json j = kvb::read_json_file(path, kvb::ExitCode::kData, "record");
    if (!j.is_object()) return;
    if (j.contains("cell")) (void)kvb::CellRecord::from_json(j["cell"], path).to_json().dump();
    if (j.contains("dataset")) (void)kvb::DatasetRecord::from_json(j["dataset"], path).to_json().dump();
  });
  return 0;
}
