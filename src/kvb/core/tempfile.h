#pragma once
/// Temporary files of atomic writes (docs/results.md §4): every output is written to `<out>.tmp<PID>` and
/// renamed into place. While such a file exists it is registered here, so that SIGINT, SIGTERM or SIGHUP
/// remove it before the process dies of the signal (the handler only unlinks pre-formatted paths, then
/// re-raises the signal with its default action: the exit status stays "killed by signal N"). A file left
/// by a process that could not clean up (SIGKILL, a crash) is swept by the next process writing the same
/// output (sweep_stale_temps).
#include <string>

namespace kvb {

/// `<path>.tmp<PID>` of this process.
std::string temp_path_for(const std::string& path);

/// Registers a temporary file for removal on SIGINT, SIGTERM and SIGHUP while the guard lives (the
/// handlers are installed on first use; a signal the process ignores stays ignored). release() (or the
/// destructor) unregisters it without touching the file. Paths too long for the handler's fixed buffers,
/// or more than a few at once, are simply not registered (the next run sweeps them).
class TempFileGuard {
 public:
  explicit TempFileGuard(const std::string& tmp_path);
  ~TempFileGuard() { release(); }
  TempFileGuard(const TempFileGuard&) = delete;
  TempFileGuard& operator=(const TempFileGuard&) = delete;
  void release() noexcept;

 private:
  int slot_ = -1;
};

/// Removes the `<path>.tmp<PID>` (and `<path>.tmp.<PID>`, the older spelling) files next to `path` whose
/// process is gone: no process with that PID exists, or the one that does started after the file was last
/// written (the PID was reused). Files of a live writer and this process's own are kept. Says so on stderr,
/// one line per file (bounded). Returns the number removed. Never throws.
int sweep_stale_temps(const std::string& path);

}  // namespace kvb
