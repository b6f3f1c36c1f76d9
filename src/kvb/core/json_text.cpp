#include "kvb/core/json_text.h"

#include <cerrno>
#include <cstring>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

namespace kvb {
namespace {

/// Largest n' <= n that does not split a UTF-8 sequence of `s`.
size_t utf8_cut(std::string_view s, size_t n) {
  if (n >= s.size()) return s.size();
  // At most 3 steps back (a UTF-8 sequence has at most 3 continuation bytes): binary data cannot empty it.
  for (int k = 0; k < 3 && n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80; ++k) --n;
  return n;
}

/// Length of the valid multi-byte UTF-8 sequence starting at s[i] (0 when it is not one), by RFC 3629's
/// table: no overlong forms (E0 80.., F0 80..), no surrogates (ED A0..), nothing above U+10FFFF (F4 90..) —
/// what nlohmann::json's serializer accepts, so text that passes here can be written to a results file.
size_t utf8_len(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  const size_t n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  const auto c1 = static_cast<unsigned char>(s[i + 1]);
  const unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
  const unsigned hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
  if (c1 < lo || c1 > hi) return 0;
  for (size_t k = 2; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
  return n;
}

/// Quotes and backslashes escaped, control characters and bytes that are not valid UTF-8 (a file's binary
/// attribute, say) as \xNN; valid UTF-8 kept as it is.
void append_escaped(std::string& out, std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    const char ch = s[i];
    const auto c = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (ch == '\n') {
      out += "\\n";
    } else if (ch == '\t') {
      out += "\\t";
    } else if (c >= 0x80) {
      const size_t n = utf8_len(s, i);
      if (n == 0) {
        out += fmt::format("\\x{:02x}", c);
      } else {
        out.append(s.substr(i, n));
        i += n - 1;
      }
    } else if (c < 0x20 || c == 0x7F) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += ch;
    }
  }
}

constexpr int kExcerptDepth = 3;  // containers below this depth print as [...] / {...}

void render(const Json& v, int depth, size_t limit, std::string& out) {
  if (out.size() > limit) return;
  if (v.is_object() || v.is_array()) {
    const bool obj = v.is_object();
    if (v.empty()) {
      out += obj ? "{}" : "[]";
      return;
    }
    if (depth >= kExcerptDepth) {
      out += obj ? "{...}" : "[...]";
      return;
    }
    out += obj ? '{' : '[';
    bool first = true;
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (out.size() > limit) return;
      if (!first) out += ',';
      first = false;
      if (obj) {
        out += excerpt(it.key(), 24);
        out += ':';
      }
      render(*it, depth + 1, limit, out);
    }
    out += obj ? '}' : ']';
    return;
  }
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    out += excerpt(s, std::min<size_t>(s.size(), limit + 1 - std::min(limit, out.size())));
    return;
  }
  out += v.dump();  // a scalar: bounded
}

}  // namespace

size_t first_invalid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t n = utf8_len(s, i);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

std::string truncate_utf8(std::string_view s, size_t max_chars) {
  if (s.size() <= max_chars) return std::string(s);
  return std::string(s.substr(0, utf8_cut(s, max_chars))) + "…";
}

std::string excerpt(std::string_view s, size_t max_chars) {
  std::string out = "\"";
  const size_t n = utf8_cut(s, max_chars);
  append_escaped(out, s.substr(0, n));
  if (n < s.size()) {
    out += fmt::format("…\" ({} bytes)", s.size());
    return out;
  }
  return out + '"';
}

std::string json_excerpt(const Json& v, size_t max_chars) {
  if (v.is_string()) return excerpt(v.get_ref<const std::string&>(), max_chars);
  std::string out;
  render(v, 0, max_chars, out);
  if (out.size() <= max_chars) return out;
  out.resize(utf8_cut(out, max_chars));
  return out + "… (" + v.type_name() + ")";
}

namespace {

/// nlohmann's DOM builder, plus the key path and nesting depth of where the parser is, so that errors
/// name the key and deep nesting stops before any recursive code sees it.
class BoundedSax {
 public:
  explicit BoundedSax(Json& root) : dom_(root, /*allow_exceptions=*/false) {}

  bool null() { return value(dom_.null()); }
  bool boolean(bool b) { return value(dom_.boolean(b)); }
  bool number_integer(Json::number_integer_t v) { return value(dom_.number_integer(v)); }
  bool number_unsigned(Json::number_unsigned_t v) { return value(dom_.number_unsigned(v)); }
  bool number_float(Json::number_float_t v, const std::string& s) { return value(dom_.number_float(v, s)); }
  bool string(std::string& s) { return value(dom_.string(s)); }
  bool binary(Json::binary_t& b) { return value(dom_.binary(b)); }
  bool start_object(std::size_t n) { return open(false) && dom_.start_object(n); }
  bool key(std::string& k) {
    frames_.back().key = k;
    return dom_.key(k);
  }
  bool end_object() { return close(dom_.end_object()); }
  bool start_array(std::size_t n) { return open(true) && dom_.start_array(n); }
  bool end_array() { return close(dom_.end_array()); }
  bool parse_error(std::size_t pos, const std::string& token, const nlohmann::detail::exception& ex) {
    pos_ = pos;
    if (ex.id == 406) {
      error_ = fmt::format("number {} overflows a double", excerpt(token, 40));
    } else {
      std::string what = ex.what();
      if (const auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);  // drop the id tag
      error_ = truncate_utf8(what, 240);
    }
    return false;
  }

  const std::string& error() const { return error_; }
  size_t pos() const { return pos_; }
  /// Where the parser is, as a config key path: codecs[0].params.bits ("(top level)" at the root).
  std::string path() const {
    std::string p;
    for (size_t i = 0; i < frames_.size(); ++i) {
      const auto& f = frames_[i];
      if (f.array) {
        p += fmt::format("[{}]", f.index);
      } else if (!f.key.empty() || i + 1 < frames_.size()) {
        const bool plain = f.key.size() <= 40 && f.key.find_first_of(".[]\" ") == std::string::npos;
        p += (p.empty() ? "" : ".") + (plain ? f.key : excerpt(f.key, 40));
      }
    }
    if (p.size() > 100) {  // bounded: the first and the last components
      size_t tail = p.size() - 30;
      while (tail < p.size() && (static_cast<unsigned char>(p[tail]) & 0xC0) == 0x80) ++tail;
      p = p.substr(0, utf8_cut(p, 60)) + "…" + p.substr(tail);
    }
    return p.empty() ? "(top level)" : p;
  }

 private:
  struct Frame {
    bool array = false;
    size_t index = 0;
    std::string key;
  };
  bool value(bool ok) {
    if (!frames_.empty() && frames_.back().array) ++frames_.back().index;
    return ok;
  }
  bool open(bool array) {
    if (static_cast<int>(frames_.size()) >= kMaxJsonDepth) {
      error_ = fmt::format("nested deeper than {} levels of arrays and objects", kMaxJsonDepth);
      return false;
    }
    frames_.push_back(Frame{array, 0, {}});
    return true;
  }
  bool close(bool ok) {
    frames_.pop_back();
    return value(ok);
  }

  nlohmann::detail::json_sax_dom_parser<Json> dom_;
  std::vector<Frame> frames_;
  std::string error_;
  size_t pos_ = 0;
};

[[noreturn]] void throw_as(ExitCode code, const std::string& msg) {
  switch (code) {
    case ExitCode::kUsage: throw UsageError(msg);
    case ExitCode::kData: throw DataError(msg);
    case ExitCode::kRuntime: throw RuntimeError(msg);
    default: throw Error(code, msg);
  }
}

}  // namespace

Json parse_json(const std::string& text, const std::string& file, ExitCode code) {
  Json root;
  BoundedSax sax(root);
  const bool ok = Json::sax_parse(text, &sax);
  if (ok && sax.error().empty()) return root;
  const std::string path = sax.path();
  if (!sax.error().empty() && sax.error().rfind("nested deeper", 0) == 0)
    throw_as(code, fmt::format("{}: not valid JSON: {} (at {})", file, sax.error(), path));
  if (sax.error().rfind("number ", 0) == 0)
    throw_as(code, fmt::format("{}: {}: {} (byte {})", file, path, sax.error(), sax.pos()));
  throw_as(code, fmt::format("{}: not valid JSON (in {}): {}", file, path,
                             sax.error().empty() ? std::string("parse stopped") : sax.error()));
}

std::string read_text_file(const std::string& path, ExitCode code, std::string_view what) {
  const auto fail = [&](int err) {
    throw_as(code, fmt::format("{}: cannot read {}: {}", path, what, std::strerror(err)));
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    fail(e);
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail(EISDIR);
  }
  std::string out;
  if (S_ISREG(st.st_mode)) out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      ::close(fd);
      fail(e);
    }
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

Json read_json_file(const std::string& path, ExitCode code, std::string_view what) {
  return parse_json(read_text_file(path, code, what), path, code);
}

}  // namespace kvb
