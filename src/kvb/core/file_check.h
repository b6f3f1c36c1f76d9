#pragma once
/// What the operating system says about a path before a format library (HDF5, an ifstream) gets to it, so a
/// permission problem, a directory or a symlink loop is reported for what it is instead of as "not an HDF5
/// file" or "not found".
#include <string>

namespace kvb {

/// Throws DataError "cannot open PATH: <reason>" unless `path` opens for reading as a regular file: no such
/// file, permission denied, is a directory, symlink loop (too many levels of symbolic links), not a regular
/// file, or any other errno of open(2) with its strerror text. `what` names the expected file in the
/// message ("a kvdump HDF5 file", "a llama2.c checkpoint").
void require_readable_file(const std::string& path, const char* what);

}  // namespace kvb
