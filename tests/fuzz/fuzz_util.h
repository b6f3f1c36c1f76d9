#pragma once
// Shared by the libFuzzer targets: the one expected failure (kvb::Error) and a scratch file for readers that
// only take paths.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "kvb/core/error.h"

namespace kvbfuzz {

/// Runs `fn`; a kvb::Error is the reader's documented rejection of a bad input and is swallowed. Anything
/// else propagates: libFuzzer reports an uncaught exception as a crash (a finding).
template <class Fn>
void expect_only_kvb_errors(Fn&& fn) {
  try {
    fn();
  } catch (const kvb::Error&) {
  }
}

/// A per-process scratch path under $TMPDIR (default /tmp; /dev/shm keeps it in memory), rewritten per input.
inline const std::string& scratch_path(const char* tag) {
  static const std::string p = [tag] {
    const char* d = std::getenv("TMPDIR");
    return std::string(d && *d ? d : "/tmp") + "/kvb_fuzz_" + tag + "_" + std::to_string(static_cast<long>(::getpid()));
  }();
  return p;
}

inline void write_bytes(const std::string& path, const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();  // the harness's own failure, not the reader's
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
}

}  // namespace kvbfuzz
