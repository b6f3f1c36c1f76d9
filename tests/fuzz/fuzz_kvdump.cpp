// libFuzzer target: the kvdump HDF5 reader (src/kvb/io/kvdump.cpp) on in-memory HDF5 images (the reader's
// image constructor, HDF5's core driver; the same checks as a file on disk): open and validate, inspect,
// then read a layer's K/V, queries, observation queries and tokens of every sequence (bounded).
#include <algorithm>
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "kvb/io/inspect.h"
#include "kvb/io/kvdump.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // A small ceiling: the images are at most a few hundred KB, and libFuzzer's -rss_limit_mb catches the rest.
  setenv("KVB_MAX_ALLOC_GB", "0.25", 1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvbfuzz::expect_only_kvb_errors([&] {
    kvb::KvDumpReader r("fuzz.h5", data, size);
    (void)r.checksum();
    (void)kvb::dump_summary_json(r).dump(2);  // what `kvbench inspect --json` prints
    kvb::InspectOptions io;
    io.max_queries = 4;
    io.max_sequences = 2;
    kvbfuzz::expect_only_kvb_errors([&] { (void)kvb::to_json(kvb::inspect_dump(r, io)).dump(2); });
    const auto& seqs = r.sequences();
    const int layers = r.attrs().shape.n_layers;
    for (size_t s = 0; s < std::min<size_t>(seqs.size(), 4); ++s) {
      const int l = static_cast<int>(s % static_cast<size_t>(layers));
      kvbfuzz::expect_only_kvb_errors([&] { (void)r.read_kv(s, l, 0, seqs[s].n_tokens); });
      kvbfuzz::expect_only_kvb_errors([&] { (void)r.read_queries(s, l, 0); });
      kvbfuzz::expect_only_kvb_errors([&] { (void)r.read_obs(s, l, seqs[s].context_len / 2); });
      kvbfuzz::expect_only_kvb_errors([&] { (void)r.read_tokens(s); });
    }
  });
  return 0;
}
