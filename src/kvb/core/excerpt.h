#pragma once
/// A bounded, quoted excerpt of a user- or file-supplied string for error messages (docs/errors.md §2: a
/// message never echoes a whole value): at most `max_chars` bytes, control and non-ASCII bytes escaped as
/// \xNN, and the total length said when it was cut: "abc…" (1048576 bytes).
#include <cstddef>
#include <string>

namespace kvb {

std::string excerpt(const std::string& s, size_t max_chars = 64);

}  // namespace kvb
