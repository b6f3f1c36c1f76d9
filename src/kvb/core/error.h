#pragma once
/// Three error tiers (docs/errors.md §3):
///  - KVB_ASSERT: internal invariant; aborts with file:line.
///  - kvb::Error (thrown via KVB_THROW / KVB_CHECK / throw UsageError etc.): user, config or data errors,
///    each carrying the exit code of docs/errors.md §1.
///  - per-cell failures become result records (status "skipped" / "error") in the runner.
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace kvb {

/// Exit codes of docs/errors.md §1.
enum class ExitCode : int {
  kOk = 0,
  kRegression = 1,  ///< `compare` found a regression
  kUsage = 2,       ///< usage or config error
  kData = 3,        ///< missing file, wrong schema, shape mismatch, NaN/Inf in a tensor
  kRuntime = 4,     ///< runtime failure (device missing, out of memory, ...)
};

class Error : public std::runtime_error {
 public:
  Error(ExitCode code, const std::string& msg) : std::runtime_error(msg), code_(code) {}
  ExitCode code() const { return code_; }

 private:
  ExitCode code_;
};

/// Config / command-line error (exit 2). Message must name the key and the allowed values.
struct UsageError : Error {
  explicit UsageError(const std::string& m) : Error(ExitCode::kUsage, m) {}
};
/// Data error (exit 3). Message must name the file and the HDF5 path, expected vs found.
struct DataError : Error {
  explicit DataError(const std::string& m) : Error(ExitCode::kData, m) {}
};
/// Runtime failure (exit 4).
struct RuntimeError : Error {
  explicit RuntimeError(const std::string& m) : Error(ExitCode::kRuntime, m) {}
};
/// A codec cannot run this configuration on this data (e.g. group_size does not divide head_dim).
/// The runner records the cell as `skipped` with this message as the reason; never fatal.
struct Unsupported : Error {
  explicit Unsupported(const std::string& m) : Error(ExitCode::kUsage, m) {}
};

}  // namespace kvb

#define KVB_ASSERT(cond)                                                                   \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::fprintf(stderr, "kvbench internal error: %s:%d: assertion failed: %s\n", __FILE__, \
                   __LINE__, #cond);                                                       \
      std::abort();                                                                        \
    }                                                                                      \
  } while (0)

/// Throw `ErrType` (UsageError, DataError, RuntimeError, Unsupported) with a fmt message when cond fails.
#define KVB_CHECK(cond, ErrType, ...)                  \
  do {                                                 \
    if (!(cond)) throw ErrType(fmt::format(__VA_ARGS__)); \
  } while (0)
