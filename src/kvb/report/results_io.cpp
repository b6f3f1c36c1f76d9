#include "kvb/report/results_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "kvb/core/error.h"
#include "kvb/core/tempfile.h"
#include "kvb/metrics/metrics.h"
#include "kvb/report/results_csv.h"

namespace kvb {
namespace fs = std::filesystem;

void write_file_atomic(const std::string& path, const std::string& content) {
  sweep_stale_temps(path);
  const std::string tmp = temp_path_for(path);
  TempFileGuard guard(tmp);  // SIGINT/SIGTERM remove it
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw RuntimeError(fmt::format("{}: cannot create: {}", tmp, std::strerror(errno)));
  size_t off = 0;
  while (off < content.size()) {
    const ssize_t n = ::write(fd, content.data() + off, content.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw RuntimeError(fmt::format("{}: write failed: {}", tmp, std::strerror(e)));
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw RuntimeError(fmt::format("{}: cannot flush: {}", tmp, std::strerror(errno)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw RuntimeError(fmt::format("{}: cannot rename into place: {}", path, std::strerror(e)));
  }
}

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return ss.str();
}

Json metrics_json() { return to_json(registry_metrics()); }

namespace {
/// dump() throws on invalid UTF-8; replace rather than lose a finished run.
std::string dump_file(const Json& j) { return j.dump(2, ' ', false, Json::error_handler_t::replace) + "\n"; }
}  // namespace

void write_results_dir(const std::string& dir, const ResultDoc& doc) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw RuntimeError(fmt::format("{}: cannot create the results directory: {}", dir, ec.message()));
  write_file_atomic((fs::path(dir) / "results.json").string(), dump_file(doc.to_json()));
  write_file_atomic((fs::path(dir) / "results.csv").string(), results_csv(doc));
}

void write_record_file(const std::string& path, const std::string& run_key, size_t index, const char* kind,
                       const Json& record) {
  write_file_atomic(path, dump_file(Json{{"run_key", run_key}, {"index", index}, {kind, record}}));
}

}  // namespace kvb
