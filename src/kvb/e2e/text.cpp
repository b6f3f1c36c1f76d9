#include "kvb/e2e/text.h"

#include <fstream>
#include <iterator>

#include "kvb/capture/capture.h"
#include "kvb/core/error.h"
#include "kvb/core/rng.h"

namespace kvb::e2e {
namespace {

std::vector<int32_t> read_bytes(const std::string& path, int vocab) {
  KVB_CHECK(vocab >= 256, DataError,
            "{}: model.text.format \"bytes\" needs a byte-level model (vocab_size >= 256), this one has {}", path, vocab);
  std::ifstream in(path, std::ios::binary);
  KVB_CHECK(in.good(), DataError, "{}: text file not found or unreadable", path);
  std::vector<int32_t> ids;
  for (std::istreambuf_iterator<char> it(in), end; it != end; ++it) ids.push_back(static_cast<unsigned char>(*it));
  return ids;
}

}  // namespace

std::vector<Window> load_windows(const ModelSpec& s, const Llama2Model& model) {
  const Llama2Config& mc = model.config();
  const int64_t C = s.prompt_len, N = s.continuation_len, span = C + N;
  const bool gen = s.text.format == "generate";
  // Positions 0..C+N-1 are fed; generated windows also need their target token from the model's context.
  const int64_t need_ctx = gen ? span + 1 : span;
  KVB_CHECK(need_ctx <= mc.seq_len, UsageError,
            "model.prompt_len + model.continuation_len{} = {} exceeds the context of {} (seq_len = {})",
            gen ? " + 1" : "", need_ctx, s.checkpoint, mc.seq_len);
  const int total = s.calibration_windows + s.windows;
  std::vector<int32_t> text;
  if (!gen) {
    text = s.text.format == "ids" ? read_token_file(s.text.path, mc.vocab_size) : read_bytes(s.text.path, mc.vocab_size);
    const int64_t needed = (static_cast<int64_t>(s.first_window) + total) * span + 1;
    KVB_CHECK(static_cast<int64_t>(text.size()) >= needed, DataError,
              "{}: {} tokens; windows {}..{} of {} + {} tokens (and the target after the last) need {}", s.text.path,
              text.size(), s.first_window, s.first_window + total - 1, C, N, needed);
  }
  std::vector<Window> out;
  for (int k = 0; k < total; ++k) {
    Window w;
    w.index = s.first_window + k;
    w.calibration = k < s.calibration_windows;
    w.id = fmt::format("w{}", w.index);
    if (gen) {
      w.tokens = generate_tokens(model, span + 1, s.text.temperature, derive_seed(s.text.seed, {uint64_t(w.index)}));
    } else {
      const auto b = text.begin() + static_cast<std::ptrdiff_t>(w.index * span);
      w.tokens.assign(b, b + span + 1);
    }
    out.push_back(std::move(w));
  }
  return out;
}

}  // namespace kvb::e2e
