#pragma once
/// User text inside messages, and JSON text from users' files, both bounded (docs/errors.md §2, §4).
///  - excerpt / json_excerpt: a quoted, length-bounded rendering of a value for an error message. A 50 MB
///    config string or a 60 000-level nested array is shown as its first characters and its size, never
///    whole and never by unbounded recursion (nlohmann's dump() recurses once per level).
///  - parse_json: every JSON file kvbench reads from a user (configs, results, resume records) goes
///    through it: nesting deeper than kMaxJsonDepth and numbers that overflow a double are errors naming
///    the file, the key path (codecs[0].params.bits) and the byte offset, with the caller's exit code.
#include <cstddef>
#include <string>
#include <string_view>

#include "kvb/core/error.h"
#include "kvb/core/params.h"

namespace kvb {

/// Deepest nesting of arrays and objects accepted in a JSON file (kvbench's own files use at most 6).
inline constexpr int kMaxJsonDepth = 64;
/// Default bound of an excerpt, in characters.
inline constexpr size_t kExcerptChars = 64;

/// `s` in double quotes with control characters and quotes escaped; when longer than `max_chars`, its
/// first max_chars characters, "…" and the full length ("\"aaaa…\" (52428800 bytes)").
std::string excerpt(std::string_view s, size_t max_chars = kExcerptChars);

/// Byte offset of the first byte of `s` that does not start valid UTF-8 (RFC 3629: no overlong forms, no
/// surrogates, nothing above U+10FFFF), or npos. Text read from a file must pass before it can go into JSON.
size_t first_invalid_utf8(std::string_view s);

/// `s` unquoted and unescaped, cut to at most `max_chars` bytes at a UTF-8 boundary with "…" appended when
/// it was longer (for text already meant for a message, such as another error's what()).
std::string truncate_utf8(std::string_view s, size_t max_chars);

/// A JSON value rendered compactly, at most `max_chars` characters (then "…" and the value's kind), and
/// never deeper than a few levels (deeper containers print as [...] / {...}).
std::string json_excerpt(const Json& v, size_t max_chars = kExcerptChars);

/// Parse `text` (the contents of `file`) as JSON. Throws Error(code) naming `file`, the key path and the
/// byte offset on a syntax error, nesting deeper than kMaxJsonDepth, or a number that overflows a double.
Json parse_json(const std::string& text, const std::string& file, ExitCode code);

/// The whole of `path` as bytes. On failure throws Error(code) "<path>: cannot read <what>: <reason>",
/// the reason being the operating system's (no such file, permission denied, is a directory, too many
/// levels of symbolic links, ...), not a guess.
std::string read_text_file(const std::string& path, ExitCode code, std::string_view what);

/// read_text_file, then parse_json, with the same exit code.
Json read_json_file(const std::string& path, ExitCode code, std::string_view what);

}  // namespace kvb
