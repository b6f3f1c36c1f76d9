// Config validation (docs/config.md, docs/errors.md §1): every bad config is a UsageError (exit 2) naming the key and
// the allowed values, raised before any data is read.
#include <gtest/gtest.h>

#include "kvb/core/error.h"
#include "kvb/run/config.h"

namespace {

using kvb::Json;

Json base() {
  return Json::parse(R"({"name": "t", "datasets": [{"path": "d.h5"}], "codecs": [{"codec": "int", "bits": [3, 5]}]})");
}

/// Expect parse_config to throw UsageError whose message contains every needle.
void expect_usage(const Json& j, std::initializer_list<const char*> needles) {
  SCOPED_TRACE(j.dump());
  try {
    kvb::parse_config(j, "cfg.json", "/tmp");
    FAIL() << "expected a UsageError";
  } catch (const kvb::UsageError& e) {
    EXPECT_EQ(e.code(), kvb::ExitCode::kUsage);
    for (const char* n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << "message: " << e.what() << "\nmissing: " << n;
  }
}

TEST(Config, ValidParsesWithDefaults) {
  const auto c = kvb::parse_config(base(), "cfg.json", "/tmp/x");
  EXPECT_EQ(c.name, "t");
  ASSERT_EQ(c.datasets.size(), 1u);
  EXPECT_EQ(c.datasets[0].path, "/tmp/x/d.h5");  // relative to the config's directory
  EXPECT_EQ(c.datasets[0].max_queries, 64);
  ASSERT_EQ(c.codecs.size(), 1u);
  EXPECT_EQ(c.codecs[0].budgets.size(), 2u);
  EXPECT_EQ(c.topk, 32);
  EXPECT_EQ(c.device, "auto");
  EXPECT_EQ(c.repeats, 3);
  EXPECT_DOUBLE_EQ(c.min_time_s, 0.2);
}

TEST(Config, UnknownTopLevelKeyListsAllowed) {
  auto j = base();
  j["colour"] = 1;
  expect_usage(j, {"colour", "allowed keys", "datasets", "codecs", "seed"});
}

TEST(Config, UnknownCodecListsRegistered) {
  auto j = base();
  j["codecs"][0]["codec"] = "nope";
  expect_usage(j, {"nope", "registered codecs", "int", "kivi", "fp16"});
}

TEST(Config, UnknownCodecParamListsParams) {
  auto j = base();
  j["codecs"][0]["params"] = {{"bitz", 4}};
  expect_usage(j, {"codecs[0].params", "bitz", "code_bits", "group_size"});
}

TEST(Config, WrongTypes) {
  auto j = base();
  j["seed"] = "1234";
  expect_usage(j, {"seed", "integer", "string"});
  j = base();
  j["datasets"] = {{"path", "x"}};  // an object, not a list
  expect_usage(j, {"datasets", "list"});
  j = base();
  j["codecs"][0]["bits"] = "4";
  expect_usage(j, {"codecs[0].bits", "number"});
  j = base();
  j["codecs"][0]["params"] = {{"code_bits", 4.5}};
  expect_usage(j, {"code_bits", "integer"});
  expect_usage(Json::array({1, 2}), {"object"});
}

TEST(Config, BadRanges) {
  auto j = base();
  j["codecs"][0]["params"] = {{"code_bits", 9}};
  expect_usage(j, {"code_bits", "[1, 8]", "9"});
  j = base();
  j["repeats"] = 0;
  expect_usage(j, {"repeats"});
  j = base();
  j["device"] = "tpu";
  expect_usage(j, {"device", "cpu, cuda, auto", "tpu"});
  j = base();
  j["codecs"][0]["bits"] = Json::array();
  expect_usage(j, {"codecs[0].bits", "empty"});
}

TEST(Config, PresetAndBudgetConflict) {
  auto j = base();
  j["codecs"][0] = {{"codec", "kivi"}, {"preset", "paper-2"}, {"bits", 3}};
  expect_usage(j, {"codecs[0]", "preset"});
  j["codecs"][0] = {{"codec", "kivi"}, {"preset", "paper-9"}};
  expect_usage(j, {"paper-9", "paper-2"});
  j["codecs"][0] = {{"codec", "kivi"}, {"bits", 3}, {"ratio", 4}};
  expect_usage(j, {"only one"});
}

TEST(Config, MissingRequired) {
  auto j = base();
  j.erase("datasets");
  expect_usage(j, {"datasets"});
  j = base();
  j["datasets"][0].erase("path");
  expect_usage(j, {"datasets[0]", "path"});
  j = base();
  j["codecs"][0].erase("codec");
  expect_usage(j, {"codecs[0]", "codec"});
}

TEST(Config, MissingFileAndBadJson) {
  EXPECT_THROW(kvb::load_config("/nonexistent/kvbench.json"), kvb::UsageError);
}

// fuzz_config finding: a number beyond double makes nlohmann throw out_of_range (not parse_error); it must
// be the config's usage error naming the number (kvb::parse_json), not an unexpected exception.
TEST(Config, NumberOverflowIsInvalidJson) {
  for (const char* text : {R"({"name": 1e999})", "999999999999999999999999999999E999999999999",
                           R"({"codecs": [{"codec": "int", "bits": [-1e400]}]})"}) {
    SCOPED_TRACE(text);
    try {
      kvb::config_json::parse_config_text(text, "cfg.json");
      ADD_FAILURE() << "accepted";
    } catch (const kvb::UsageError& e) {
      EXPECT_NE(std::string(e.what()).find("overflows a double"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
