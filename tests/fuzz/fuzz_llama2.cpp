// libFuzzer target: the llama2.c checkpoint loader (src/kvb/capture/llama2.cpp) on arbitrary bytes, written to
// a scratch file (the loader takes a path); a model that loads and is small also runs one forward step.
#include <cstdint>

#include "fuzz_util.h"
#include "kvb/capture/llama2.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = kvbfuzz::scratch_path("llama2.bin");
  kvbfuzz::write_bytes(path, data, size);
  kvbfuzz::expect_only_kvb_errors([&] {
    const kvb::Llama2Model m = kvb::Llama2Model::load(path);
    const kvb::Llama2Config& c = m.config();
    // The runner's caches are n_layers x seq_len x kv_dim floats: run only models that stay small.
    const uint64_t cache = uint64_t(c.n_layers) * uint64_t(c.seq_len) * uint64_t(c.kv_dim());
    if (cache <= (1u << 20) && uint64_t(c.n_heads) * uint64_t(c.seq_len) <= (1u << 20)) {
      kvb::Llama2Runner run(m);
      const float* logits = run.forward(0, 0);
      (void)kvb::argmax(logits, c.vocab_size);
    }
  });
  return 0;
}
