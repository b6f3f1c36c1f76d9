#include "kvb/core/tempfile.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include <fmt/format.h>

namespace kvb {
namespace fs = std::filesystem;

namespace {

// What the signal handler may touch: fixed buffers and lock-free atomics only (async-signal-safe).
constexpr int kSlots = 16;
constexpr size_t kPathMax = 4096;
char g_paths[kSlots][kPathMax];
std::atomic<int> g_state[kSlots];  // 0 free, 1 being filled, 2 registered
constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP};
static_assert(std::atomic<int>::is_always_lock_free);

extern "C" void remove_temps_and_reraise(int sig) {
  const int saved = errno;
  for (int i = 0; i < kSlots; ++i)
    if (g_state[i].load(std::memory_order_acquire) == 2) ::unlink(g_paths[i]);
  ::signal(sig, SIG_DFL);
  ::raise(sig);  // blocked while this handler runs: delivered, with the default action, as it returns
  errno = saved;
}

void install_handlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (int sig : kSignals) {
      struct sigaction old {};
      if (::sigaction(sig, nullptr, &old) != 0 || old.sa_handler != SIG_DFL) continue;  // ignored or owned
      struct sigaction sa {};
      sa.sa_handler = remove_temps_and_reraise;
      ::sigemptyset(&sa.sa_mask);
      for (int s : kSignals) ::sigaddset(&sa.sa_mask, s);
      ::sigaction(sig, &sa, nullptr);
    }
  });
}

/// Seconds since the epoch at which process `pid` started; -1 when unknown (Linux /proc).
double process_start_time(long pid) {
  std::ifstream st(fmt::format("/proc/{}/stat", pid));
  std::string line;
  if (!std::getline(st, line)) return -1;
  const size_t rp = line.rfind(')');
  if (rp == std::string::npos) return -1;
  std::istringstream fields(line.substr(rp + 1));
  std::string f;
  // After "pid (comm)" the fields start at field 3 (state); starttime is field 22.
  for (int i = 3; i <= 22; ++i)
    if (!(fields >> f)) return -1;
  char* end = nullptr;
  const double ticks = std::strtod(f.c_str(), &end);
  if (end == f.c_str()) return -1;
  std::ifstream stat("/proc/stat");
  double btime = -1;
  while (std::getline(stat, line))
    if (line.rfind("btime ", 0) == 0) btime = std::strtod(line.c_str() + 6, nullptr);
  const long hz = ::sysconf(_SC_CLK_TCK);
  if (btime <= 0 || hz <= 0) return -1;
  return btime + ticks / static_cast<double>(hz);
}

/// Why the temporary file `p` of process `pid` is stale (empty: it may belong to a live writer).
std::string stale_reason(const fs::path& p, long pid) {
  if (pid == static_cast<long>(::getpid())) return {};
  if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return fmt::format("PID {} is no longer running", pid);
  struct stat sb {};
  if (::stat(p.c_str(), &sb) != 0) return {};
  const double started = process_start_time(pid);
  // btime is whole seconds: a second of slack before calling the live process younger than the file.
  if (started > 0 && static_cast<double>(sb.st_mtime) + 1.0 < started)
    return fmt::format("PID {} now belongs to a process started after the file was written", pid);
  return {};
}

}  // namespace

std::string temp_path_for(const std::string& path) {
  return fmt::format("{}.tmp{}", path, static_cast<long>(::getpid()));
}

TempFileGuard::TempFileGuard(const std::string& tmp_path) {
  if (tmp_path.size() >= kPathMax) return;
  install_handlers();
  for (int i = 0; i < kSlots; ++i) {
    int expected = 0;
    if (!g_state[i].compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) continue;
    std::memcpy(g_paths[i], tmp_path.c_str(), tmp_path.size() + 1);
    g_state[i].store(2, std::memory_order_release);
    slot_ = i;
    return;
  }
}

void TempFileGuard::release() noexcept {
  if (slot_ >= 0) g_state[slot_].store(0, std::memory_order_release);
  slot_ = -1;
}

int sweep_stale_temps(const std::string& path) {
  constexpr int kNamed = 5;  // lines on stderr; the rest are counted
  try {
    const fs::path target(path);
    const fs::path parent = target.parent_path(), dir = parent.empty() ? fs::path(".") : parent;
    const std::string prefix = target.filename().string() + ".tmp";
    std::error_code ec;
    int removed = 0;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
      std::string digits = name.substr(prefix.size());
      if (digits[0] == '.') digits.erase(0, 1);
      if (digits.empty() || digits.size() > 10 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
      const long pid = std::stol(digits);
      if (pid <= 0) continue;
      const fs::path stale = parent / name;  // as the output was named
      const std::string why = stale_reason(stale, pid);
      if (why.empty()) continue;
      std::error_code rec;
      if (!fs::remove(stale, rec) || rec) continue;
      if (++removed <= kNamed)
        std::fprintf(stderr, "kvbench: removed %s: temporary file of an interrupted write (%s)\n", stale.c_str(),
                     why.c_str());
    }
    if (removed > kNamed)
      std::fprintf(stderr, "kvbench: removed %d more temporary files of interrupted writes of %s\n", removed - kNamed,
                   path.c_str());
    return removed;
  } catch (const std::exception&) {
    return 0;  // sweeping is housekeeping: never the reason a write fails
  }
}

}  // namespace kvb
