// Bounded excerpts and the bounded JSON reader (src/kvb/core/json_text.h).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "kvb/core/json_text.h"

namespace {

using kvb::ExitCode;
using kvb::Json;
namespace fs = std::filesystem;

TEST(JsonText, ExcerptQuotesEscapesAndBounds) {
  EXPECT_EQ(kvb::excerpt("abc"), "\"abc\"");
  EXPECT_EQ(kvb::excerpt("a\"b\n\x01"), "\"a\\\"b\\n\\x01\"");
  const std::string big(50 << 20, 'x');  // a 50 MB value
  const std::string e = kvb::excerpt(big, 10);
  EXPECT_EQ(e, "\"xxxxxxxxxx…\" (52428800 bytes)");
  // Never splits a UTF-8 sequence: "é" is two bytes.
  const std::string e2 = kvb::excerpt("aé", 2);
  EXPECT_EQ(e2, "\"a…\" (3 bytes)");
  // Bytes that are not UTF-8 (a binary attribute) are escaped; binary data is still cut near the bound.
  EXPECT_EQ(kvb::excerpt("x\xff\xc3y"), "\"x\\xff\\xc3y\"");
  const std::string bin(1000, '\x80');
  const std::string e3 = kvb::excerpt(bin, 8);
  EXPECT_NE(e3.find("\\x80\\x80\\x80\\x80\\x80"), std::string::npos) << e3;
  EXPECT_NE(e3.find("(1000 bytes)"), std::string::npos) << e3;
}

TEST(JsonText, JsonExcerptIsBoundedInLengthAndDepth) {
  EXPECT_EQ(kvb::json_excerpt(Json(3)), "3");
  EXPECT_EQ(kvb::json_excerpt(Json::parse("[1,[2,[3,[4,[5]]]]]")), "[1,[2,[3,[...]]]]");
  Json deep = Json::array();
  for (int i = 0; i < 100000; ++i) deep = Json::array({std::move(deep)});  // dump() would recurse 100k deep
  EXPECT_EQ(kvb::json_excerpt(deep), "[[[[...]]]]");
  Json wide = Json::array();
  for (int i = 0; i < 100000; ++i) wide.push_back(i);
  const std::string w = kvb::json_excerpt(wide, 40);
  EXPECT_LT(w.size(), 70u) << w;
  EXPECT_NE(w.find("… (array)"), std::string::npos) << w;
  const std::string s = kvb::json_excerpt(Json(std::string(1 << 20, 'q')), 20);
  EXPECT_NE(s.find("(1048576 bytes)"), std::string::npos) << s;
  EXPECT_LT(s.size(), 60u) << s;
}

void expect_error(const std::string& text, ExitCode code, const std::string& fragment) {
  try {
    kvb::parse_json(text, "f.json", code);
    ADD_FAILURE() << "no error for " << text.substr(0, 80);
  } catch (const kvb::Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << "expected \"" << fragment << "\" in: " << e.what();
    EXPECT_LT(std::string(e.what()).size(), 600u) << e.what();
  }
}

TEST(JsonText, ParseJsonNamesTheKeyPathOfAnOverflow) {
  expect_error("{\"seed\": 1e400}", ExitCode::kUsage, "f.json: seed: number \"1e400\" overflows a double");
  expect_error("{\"codecs\": [{\"codec\": \"int\"}, {\"params\": {\"group_size\": -1e999}}]}", ExitCode::kUsage,
               "codecs[1].params.group_size: number \"-1e999\"");
  expect_error("[1, 2, 3e500]", ExitCode::kData, "[2]: number");
}

TEST(JsonText, ParseJsonStopsDeepNestingBeforeAnyRecursion) {
  const std::string ok = std::string(kvb::kMaxJsonDepth, '[') + std::string(kvb::kMaxJsonDepth, ']');
  EXPECT_NO_THROW(kvb::parse_json(ok, "f.json", ExitCode::kUsage));
  const std::string bad = std::string(kvb::kMaxJsonDepth + 1, '[') + std::string(kvb::kMaxJsonDepth + 1, ']');
  expect_error(bad, ExitCode::kUsage, "nested deeper than 64");
  expect_error("{\"a\": " + std::string(60000, '[') + std::string(60000, ']') + "}", ExitCode::kData, "at a[0][0]");
}

TEST(JsonText, ParseJsonSyntaxErrorsAreBounded) {
  expect_error("", ExitCode::kUsage, "f.json: not valid JSON");
  expect_error("{\"a\": [1, 2", ExitCode::kData, "in a[2]");
  expect_error("{} x", ExitCode::kUsage, "not valid JSON");
  expect_error("{\"a\": NaN}", ExitCode::kUsage, "not valid JSON");
  expect_error("\"" + std::string(1 << 20, 'u'), ExitCode::kUsage, "not valid JSON");  // a 1 MiB unterminated token
  // The exception type matches the code, so callers that catch DataError see it.
  EXPECT_THROW(kvb::parse_json("[", "f", ExitCode::kData), kvb::DataError);
  EXPECT_THROW(kvb::parse_json("[", "f", ExitCode::kUsage), kvb::UsageError);
  const Json j = kvb::parse_json("{\"a\": [1, {\"b\": null}], \"c\": 2.5}", "f", ExitCode::kData);
  EXPECT_EQ(j, Json::parse("{\"a\": [1, {\"b\": null}], \"c\": 2.5}"));
}

TEST(JsonText, ReadTextFileSaysWhatTheOsSaid) {
  const fs::path dir = fs::temp_directory_path() / ("kvb-json-text-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "sub");
  auto reason = [](const std::string& p) {
    try {
      kvb::read_text_file(p, ExitCode::kUsage, "config file");
      return std::string("(read)");
    } catch (const kvb::UsageError& e) {
      return std::string(e.what());
    }
  };
  EXPECT_NE(reason((dir / "absent").string()).find("No such file or directory"), std::string::npos);
  EXPECT_NE(reason((dir / "sub").string()).find("Is a directory"), std::string::npos);
  fs::create_symlink(dir / "l2", dir / "l1");
  fs::create_symlink(dir / "l1", dir / "l2");
  EXPECT_NE(reason((dir / "l1").string()).find("Too many levels of symbolic links"), std::string::npos);
  {
    std::ofstream(dir / "ok.json") << "{\"x\": 1}";
  }
  EXPECT_EQ(kvb::read_json_file((dir / "ok.json").string(), ExitCode::kUsage, "config")["x"], 1);
  if (::geteuid() != 0) {  // root reads anything
    fs::permissions(dir / "ok.json", fs::perms::none);
    EXPECT_NE(reason((dir / "ok.json").string()).find("Permission denied"), std::string::npos);
  }
  fs::remove_all(dir);
}

}  // namespace
