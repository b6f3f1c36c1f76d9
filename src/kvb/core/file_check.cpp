#include "kvb/core/file_check.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "kvb/core/error.h"

namespace kvb {

void require_readable_file(const std::string& path, const char* what) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int e = errno;
    std::string why;
    switch (e) {
      case ENOENT: why = "no such file"; break;
      case EACCES: why = "permission denied (the file or a directory above it is not readable by this user)"; break;
      case ELOOP: why = "symlink loop (too many levels of symbolic links)"; break;
      case ENOTDIR: why = "a component of the path is not a directory"; break;
      case ENAMETOOLONG: why = "file name too long"; break;
      default: why = std::strerror(e); break;
    }
    throw DataError(fmt::format("cannot open {}: {}, expected {}", path, why, what));
  }
  struct stat st {};
  const int rc = ::fstat(fd, &st);
  ::close(fd);
  if (rc != 0) throw DataError(fmt::format("cannot open {}: {}, expected {}", path, std::strerror(errno), what));
  if (S_ISDIR(st.st_mode)) throw DataError(fmt::format("cannot open {}: is a directory, expected {}", path, what));
  if (!S_ISREG(st.st_mode))
    throw DataError(fmt::format("cannot open {}: not a regular file (a device, FIFO or socket), expected {}", path,
                                what));
}

}  // namespace kvb
