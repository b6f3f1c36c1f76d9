// libFuzzer target: the token-id file reader (kvb::read_token_file, src/kvb/capture/capture.cpp) and e2e's
// window loader (src/kvb/e2e/text.cpp: formats "ids" and "bytes") over a tiny byte-level llama2.c model.
// Input: byte 0 picks the format and vocabulary, bytes 1-3 the prompt length, continuation length and
// windows; the rest is the text file.
#include <cstdint>
#include <cstring>
#include <vector>

#include "fuzz_util.h"
#include "kvb/capture/capture.h"
#include "kvb/capture/llama2.h"
#include "kvb/e2e/text.h"

namespace {

/// A legacy llama2.c checkpoint with zero weights: dim 4, 1 layer, 2 heads, vocab 300, seq_len 64.
const kvb::Llama2Model& tiny_model() {
  static const kvb::Llama2Model m = [] {
    const int32_t h[7] = {4, 8, 1, 2, 2, 300, 64};
    const uint64_t dim = 4, hid = 8, L = 1, V = 300, kv = 4, hs = 2, S = 64;
    const uint64_t n = V * dim + L * dim + 2 * L * dim * dim + 2 * L * kv * dim + L * dim + 3 * L * hid * dim + dim +
                       S * hs;
    std::vector<uint8_t> bytes(sizeof(h) + n * sizeof(float), 0);
    std::memcpy(bytes.data(), h, sizeof(h));
    const std::string& path = kvbfuzz::scratch_path("tiny_model.bin");
    kvbfuzz::write_bytes(path, bytes.data(), bytes.size());
    return kvb::Llama2Model::load(path);
  }();
  return m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  const kvb::Llama2Model& model = tiny_model();
  const std::string& path = kvbfuzz::scratch_path("tokens.txt");
  kvbfuzz::write_bytes(path, data + 4, size - 4);
  const int vocab = 1 + (data[0] >> 1) * 8;  // 1 .. 1017
  kvbfuzz::expect_only_kvb_errors([&] { (void)kvb::read_token_file(path, vocab); });
  kvb::e2e::ModelSpec s;
  s.checkpoint = "tiny_model.bin";
  s.text.format = (data[0] & 1) ? "bytes" : "ids";
  s.text.path = path;
  s.prompt_len = 1 + data[1] % 64;
  s.continuation_len = 1 + data[2] % 16;
  s.windows = 1 + data[3] % 4;
  s.calibration_windows = (data[3] >> 2) % 3;
  s.first_window = (data[3] >> 4) % 4;
  kvbfuzz::expect_only_kvb_errors([&] { (void)kvb::e2e::load_windows(s, model); });
  return 0;
}
