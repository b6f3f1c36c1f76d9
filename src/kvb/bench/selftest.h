#pragma once
/// Backend parity checks (issue 3), shared by `kvbench selftest` and the `gpu` GoogleTest suite.
///
/// On device "cuda" every codec with a CUDA backend is encoded on the GPU and on the CPU from the same
/// seeded cache and compared: stored buffers byte for byte (the quantizers are order-free elementwise math
/// from the shared KVB_HD headers, so codes and scales must be identical), storage items exactly, and the
/// logits and attention outputs within named tolerances (fp32 sums in different orders). On device "cpu"
/// the fast CPU path is compared with the codec's naive reference instead (logits and outputs).
#include <cstdint>
#include <string>
#include <vector>

#include "kvb/core/params.h"

namespace kvb {

struct SelftestCase {
  std::string codec;
  Json params;        ///< partial; defaults filled from the registry
  int kv_heads = 2;
  int group = 2;      ///< query heads per KV head (GQA)
  int64_t tokens = 0;
  int head_dim = 0;
  uint64_t seed = 0;
  /// The cache's RoPE as the dump would record it (kvquant undoes and re-applies it; every other codec ignores
  /// it) and the position of its first row (LayerKV::pos0).
  std::string rope = "half";
  int64_t pos0 = 0;
  std::string describe() const;  ///< "int{code_bits:4} H=2x2 C=4097 d=96 seed=7" (+ " rope=… pos0=…" if not the defaults)
};

struct SelftestCheck {
  std::string name;   ///< buffers, storage, scores, attend, attend_many
  double value = 0;   ///< measured (bytes differing, items differing, max relative error)
  double tol = 0;
  bool pass = false;
  std::string detail;
};

struct SelftestResult {
  SelftestCase c;
  std::string compared;  ///< e.g. "cuda vs cpu"
  bool skipped = false;
  std::string reason;
  std::vector<SelftestCheck> checks;
  bool pass() const;
};

/// Tolerances (relative): logits max|Δŝ| / (1 + max|ŝ|), outputs rel_l2. Both sides decode the same stored
/// values; they differ only in fp32 summation order (and FMA contraction on the device): per logit a d-term
/// dot, ~d·2^-24 ≈ 1e-5 at d = 256 in the worst case; per output a C-term weighted sum whose random-walk
/// rounding grows like sqrt(C)·2^-24 ≈ 2e-5 at C = 128k. The bounds leave ~10x margin.
constexpr double kSelftestScoreTol = 1e-4;
constexpr double kSelftestAttendTol = 2e-4;

/// The default matrix: every codec with the device's backend, at head_dim 64/96/128/256, GQA 1 and 4,
/// C in {1, 7, 129, 4097} (quick) plus 32768 and 131072 (full, cuda only).
std::vector<SelftestCase> selftest_cases(const std::string& device, bool full);

/// Runs one case on `device` ("cpu" or "cuda"). Never throws for a codec's own failure (the check fails).
SelftestResult run_selftest_case(const SelftestCase& c, const std::string& device);

}  // namespace kvb
