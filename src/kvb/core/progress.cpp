// The progress line on stderr (progress.h).
#include "kvb/core/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>

#include <fmt/format.h>

namespace kvb {
namespace {

std::atomic<bool> g_quiet{false};
std::mutex& line_mutex() {
  static std::mutex m;  // one terminal line for every ProgressLine
  return m;
}
double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
void to_stderr(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stderr);
  std::fflush(stderr);
}

}  // namespace

void set_progress_quiet(bool quiet) { g_quiet = quiet; }
bool progress_allowed() { return !g_quiet && ::isatty(2) == 1; }

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const auto t = static_cast<int64_t>(std::llround(s));
  if (t < 60) return fmt::format("{}s", t);
  if (t < 3600) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}h{:02}m", t / 3600, (t % 3600) / 60);
}

std::string format_progress(int64_t done, int64_t total, const std::string& what, double elapsed_s,
                            ProgressStyle style, int width) {
  std::string head, tail;
  if (total <= 0) {
    head = fmt::format("[{}] ", done);
    tail = fmt::format("  elapsed {}", format_duration(elapsed_s));
  } else {
    const double eta = done > 0 ? elapsed_s / static_cast<double>(done) * static_cast<double>(total - done) : NAN;
    head = style == ProgressStyle::kPercent
               ? fmt::format("[{:3d}%] ", static_cast<int>(100.0 * static_cast<double>(std::min(done, total)) / total))
               : fmt::format("[{}/{}] ", done, total);
    tail = fmt::format("  elapsed {}  ETA {}", format_duration(elapsed_s), format_duration(eta));
  }
  std::string w = what;  // too wide: the item is cut, the counts and times stay
  const size_t fixed = head.size() + tail.size();
  if (width > 0 && fixed + w.size() > static_cast<size_t>(width))
    w.resize(static_cast<size_t>(width) > fixed ? static_cast<size_t>(width) - fixed : 0);
  std::string s = head + w + tail;
  if (width > 0 && s.size() > static_cast<size_t>(width)) s.resize(static_cast<size_t>(width));
  return s;
}

namespace {
int terminal_width() {
  winsize ws{};
  if (::ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1) return ws.ws_col - 1;  // never wrap onto a new line
  return 79;
}
}  // namespace

ProgressLine::ProgressLine(bool enabled, int64_t total, ProgressStyle style)
    : ProgressLine(enabled, total, style, steady_seconds, to_stderr) {
  if (enabled_) width_ = terminal_width();
}

ProgressLine::ProgressLine(bool enabled, int64_t total, ProgressStyle style, Clock clock, Sink sink)
    : enabled_(enabled), total_(total), style_(style), clock_(std::move(clock)), sink_(std::move(sink)) {
  if (enabled_) start_ = clock_();
}

ProgressLine::~ProgressLine() { finish(); }

int64_t ProgressLine::done() const {
  std::lock_guard<std::mutex> lk(line_mutex());
  return done_;
}

void ProgressLine::step(const std::string& what, int64_t n) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lk(line_mutex());
  done_ += n;
  draw(what, total_ > 0 && done_ >= total_);  // the last unit is always shown
}

void ProgressLine::show(const std::string& what) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lk(line_mutex());
  draw(what, false);
}

void ProgressLine::draw(const std::string& what, bool force) {
  if (finished_) return;
  const double now = clock_();
  if (!force && now - last_ < kMinIntervalS) return;
  last_ = now;
  drawn_ = true;
  sink_("\r\033[K" + format_progress(done_, total_, what, now - start_, style_, width_));
}

void ProgressLine::finish() {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lk(line_mutex());
  if (finished_) return;
  finished_ = true;
  if (drawn_) sink_("\r\033[K");
}

}  // namespace kvb
