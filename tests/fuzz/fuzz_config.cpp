// libFuzzer target: the run config parser (src/kvb/run/config.cpp) and the e2e config parser
// (src/kvb/e2e/e2e_config.cpp) on arbitrary bytes, through the same text entry point as a config file.
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "kvb/e2e/e2e_config.h"
#include "kvb/run/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::string path = "/nonexistent/fuzz.json";
  kvbfuzz::expect_only_kvb_errors([&] {
    const kvb::Json j = kvb::config_json::parse_config_text(text, path);
    kvbfuzz::expect_only_kvb_errors([&] {
      const kvb::Config c = kvb::parse_config(j, path, "/nonexistent");
      (void)c.resolved().dump();
    });
    kvbfuzz::expect_only_kvb_errors([&] {
      const kvb::e2e::E2eConfig c = kvb::e2e::parse_e2e_config(j, path, "/nonexistent");
      (void)c.resolved().dump();
    });
  });
  return 0;
}
