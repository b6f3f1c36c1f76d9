#include "kvb/core/excerpt.h"

#include <fmt/format.h>

namespace kvb {

std::string excerpt(const std::string& s, size_t max_chars) {
  std::string out = "\"";
  const size_t n = s.size() < max_chars ? s.size() : max_chars;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char ch = static_cast<unsigned char>(s[i]);
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += static_cast<char>(ch);
    } else if (ch < 0x20 || ch >= 0x7f) {
      out += fmt::format("\\x{:02x}", ch);
    } else {
      out += static_cast<char>(ch);
    }
  }
  out += '"';
  if (n < s.size()) out += fmt::format("... ({} bytes in all)", s.size());
  return out;
}

}  // namespace kvb
