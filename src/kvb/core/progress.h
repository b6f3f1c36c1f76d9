#pragma once
/// One updating status line on stderr for long work (`kvbench run`, `e2e`, `gen`, `capture`, kvcar's
/// training): "\r\033[K" and the text, at most one update per kMinIntervalS (the last one of a run of
/// updates may be dropped; the line is a live view, not a log), cleared by finish() or the destructor.
///
/// Only on a terminal: progress_allowed() is true when stderr is a TTY and the command did not say -q
/// (set_progress_quiet); a ProgressLine built with enabled = false writes nothing, ever, so output that is
/// not a terminal (CI, tests, pipes) is unchanged. All ProgressLines share one lock and one terminal line:
/// they are thread-safe (cells run in parallel) and a nested one (kvcar's training inside a run) just
/// overwrites the line. The clock and the sink are injectable for tests.
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

namespace kvb {

inline constexpr double kMinIntervalS = 0.1;

/// -q: no progress line anywhere in this process (the CLI calls it before running a command).
void set_progress_quiet(bool quiet);
/// stderr is a terminal and -q was not given.
bool progress_allowed();

/// "7s", "4m05s", "2h03m"; "?" for a negative or non-finite value.
std::string format_duration(double seconds);
/// How the counts are shown: "[done/total]" or "[ 42%]" (for units that mean nothing to a reader).
enum class ProgressStyle { kCount, kPercent };
/// "[done/total] what  elapsed E  ETA R" (ETA by the mean time per unit so far; "?" before the first unit;
/// without total (<= 0): "[done] what  elapsed E"). With width > 0 at most `width` characters: `what` is cut
/// first, so the counts and the times stay.
std::string format_progress(int64_t done, int64_t total, const std::string& what, double elapsed_s,
                            ProgressStyle style = ProgressStyle::kCount, int width = 0);

class ProgressLine {
 public:
  using Clock = std::function<double()>;                   ///< monotonic seconds
  using Sink = std::function<void(const std::string&)>;    ///< receives the raw bytes
  /// enabled: typically progress_allowed(). total: units of work (<= 0: unknown). The line is cut to the
  /// terminal's width.
  ProgressLine(bool enabled, int64_t total, ProgressStyle style = ProgressStyle::kCount);
  /// For tests: this clock and sink, no width limit.
  ProgressLine(bool enabled, int64_t total, ProgressStyle style, Clock clock, Sink sink);
  ~ProgressLine();
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  bool enabled() const { return enabled_; }
  /// Counts n more units done and shows `what` (the current item) with the counts, elapsed time and ETA.
  void step(const std::string& what, int64_t n = 1);
  /// Shows `what` with the counts so far, without counting.
  void show(const std::string& what);
  /// Clears the line (once; later calls do nothing).
  void finish();
  int64_t done() const;

 private:
  void draw(const std::string& what, bool force);
  bool enabled_;
  int64_t total_, done_ = 0;
  ProgressStyle style_;
  int width_ = 0;
  Clock clock_;
  Sink sink_;
  double start_ = 0, last_ = -1e300;
  bool drawn_ = false, finished_ = false;
};

}  // namespace kvb
