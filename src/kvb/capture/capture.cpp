// `kvbench capture`: record a llama2.c checkpoint's real K/V/Q into a kvdump (see capture.h).
#include "kvb/capture/capture.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "kvb/attention/exact.h"
#include "kvb/core/error.h"
#include "kvb/core/progress.h"
#include "kvb/core/rng.h"
#include "kvb/version.h"

namespace kvb {
namespace {

// ---- SHA-256 (FIPS 180-4), self-contained -------------------------------------------------------
class Sha256 {
 public:
  void update(const uint8_t* p, size_t n) {
    len_ += n;
    while (n > 0) {
      const size_t take = std::min(n, size_t(64) - fill_);
      std::memcpy(buf_.data() + fill_, p, take);
      fill_ += take;
      p += take;
      n -= take;
      if (fill_ == 64) {
        block(buf_.data());
        fill_ = 0;
      }
    }
  }
  std::string hex() {
    const uint64_t bits = len_ * 8;
    const uint8_t pad = 0x80;
    update(&pad, 1);
    const uint8_t zero = 0;
    while (fill_ != 56) update(&zero, 1);
    uint8_t lenb[8];
    for (int i = 0; i < 8; ++i) lenb[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    update(lenb, 8);
    std::string s;
    for (uint32_t v : h_) s += fmt::format("{:08x}", v);
    return s;
  }

 private:
  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void block(const uint8_t* b) {
    static constexpr uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = (uint32_t(b[4 * i]) << 24) | (uint32_t(b[4 * i + 1]) << 16) | (uint32_t(b[4 * i + 2]) << 8) |
             uint32_t(b[4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], bb = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
      const uint32_t ch = (e & f) ^ (~e & g);
      const uint32_t t1 = h + S1 + ch + k[i] + w[i];
      const uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
      const uint32_t maj = (a & bb) ^ (a & c) ^ (bb & c);
      const uint32_t t2 = S0 + maj;
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = bb;
      bb = a;
      a = t1 + t2;
    }
    h_[0] += a;
    h_[1] += bb;
    h_[2] += c;
    h_[3] += d;
    h_[4] += e;
    h_[5] += f;
    h_[6] += g;
    h_[7] += h;
  }
  std::array<uint32_t, 8> h_{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                             0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::array<uint8_t, 64> buf_{};
  size_t fill_ = 0;
  uint64_t len_ = 0;
};

/// run.c's sample_mult over softmax(logits / temperature), with the coin from kvb::Rng.
int sample(const float* logits, int n, double temperature, Rng& rng) {
  std::vector<double> p(static_cast<size_t>(n));
  double mx = -INFINITY;
  for (int i = 0; i < n; ++i) mx = std::max(mx, static_cast<double>(logits[i]) / temperature);
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += (p[size_t(i)] = std::exp(static_cast<double>(logits[i]) / temperature - mx));
  const double coin = rng.uniform() * sum;
  double cdf = 0;
  for (int i = 0; i < n; ++i) {
    cdf += p[size_t(i)];
    if (coin < cdf) return i;
  }
  return n - 1;
}

}  // namespace

std::string sha256_hex(const void* data, size_t n) {
  Sha256 s;
  s.update(static_cast<const uint8_t*>(data), n);
  return s.hex();
}

std::string sha256_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  KVB_CHECK(in.good(), DataError, "{}: cannot open for hashing", path);
  Sha256 s;
  std::vector<char> buf(1 << 16);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto got = in.gcount();
    if (got > 0) s.update(reinterpret_cast<const uint8_t*>(buf.data()), static_cast<size_t>(got));
  }
  KVB_CHECK(in.eof(), DataError, "{}: read error while hashing", path);
  return s.hex();
}

std::vector<int32_t> generate_tokens(const Llama2Model& model, int64_t n, double temperature, uint64_t seed,
                                     const std::vector<int32_t>& prompt) {
  const Llama2Config& c = model.config();
  KVB_CHECK(n >= 1 && n <= c.seq_len, UsageError, "--tokens: expected 1..{} (the model's seq_len), got {}", c.seq_len,
            n);
  KVB_CHECK(prompt.empty() || prompt[0] == kLlama2Bos, UsageError, "a prompt must start with BOS ({})", kLlama2Bos);
  std::vector<int32_t> tokens{kLlama2Bos};
  Llama2Runner run(model);
  Rng rng(seed);
  for (int64_t pos = 0; static_cast<int64_t>(tokens.size()) < n; ++pos) {
    const float* logits = run.forward(tokens[size_t(pos)], static_cast<int>(pos));
    if (pos + 1 < static_cast<int64_t>(prompt.size())) {
      tokens.push_back(prompt[size_t(pos + 1)]);
    } else {
      tokens.push_back(temperature > 0 ? sample(logits, c.vocab_size, temperature, rng)
                                       : argmax(logits, c.vocab_size));
    }
  }
  return tokens;
}

std::vector<int32_t> read_token_file(const std::string& path, int vocab) {
  std::ifstream in(path);
  KVB_CHECK(in.good(), DataError, "{}: token file not found or unreadable", path);
  std::vector<int32_t> ids;
  std::string word;
  while (in >> word) {
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    KVB_CHECK(used == word.size() && v >= 0 && v < vocab, DataError,
              "{}: token #{}: expected an integer id in [0, {}), found '{}'", path, ids.size(), vocab, word);
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

SequenceData record_sequence(const Llama2Model& model, const std::vector<int32_t>& tokens, int64_t queries,
                             const std::string& id, ModelAttnOut* model_attn_out, int64_t obs_window) {
  const Llama2Config& c = model.config();
  const int64_t T = static_cast<int64_t>(tokens.size());
  KVB_CHECK(T >= 2 && T <= c.seq_len, UsageError, "--tokens: expected 2..{} (the model's seq_len), got {}", c.seq_len,
            T);
  KVB_CHECK(queries >= 1 && queries < T, UsageError,
            "--queries: expected 1..{} (fewer than --tokens={}, so the context C = T - Q >= 1), got {}", T - 1, T,
            queries);
  KVB_CHECK(obs_window >= 0, UsageError, "--obs-window: expected >= 0 (0 = none), got {}", obs_window);
  const int64_t Q = queries, C = T - Q, W = std::min(obs_window, C), P0 = C - W;
  const int L = c.n_layers, H = c.n_heads, G = c.n_kv_heads, D = c.head_size(), kv_mul = c.kv_mul();

  SequenceData s;
  s.id = id;
  s.n_tokens = T;
  s.context_len = C;
  s.tokens = tokens;
  for (int64_t i = 0; i < Q; ++i) s.query_positions.push_back(C + i);
  for (int64_t p = P0; p < C; ++p) s.obs_positions.push_back(p);
  s.layers.resize(size_t(L));
  for (auto& ly : s.layers) {
    ly.keys.assign(size_t(G * T * D), 0.f);
    ly.values.assign(size_t(G * T * D), 0.f);
    ly.queries.assign(size_t(H * Q * D), 0.f);
    ly.ref_out.assign(size_t(H * Q * D), 0.f);
    ly.obs_queries.assign(size_t(H * W * D), 0.f);
  }
  if (model_attn_out) model_attn_out->assign(size_t(L), std::vector<float>(size_t(H * Q * D), 0.f));

  Llama2Runner run(model);
  for (int64_t p = 0; p < T; ++p) {
    run.forward(tokens[size_t(p)], static_cast<int>(p));
    for (int l = 0; l < L; ++l) {
      auto& ly = s.layers[size_t(l)];
      const float* k = run.key(l, int(p));
      const float* v = run.value(l, int(p));
      for (int g = 0; g < G; ++g) {
        std::memcpy(&ly.keys[size_t((g * T + p) * D)], k + g * D, size_t(D) * sizeof(float));
        std::memcpy(&ly.values[size_t((g * T + p) * D)], v + g * D, size_t(D) * sizeof(float));
      }
      if (p >= P0 && p < C)  // an observation query: the prompt token's own query, as the forward computed it
        for (int h = 0; h < H; ++h)
          std::memcpy(&ly.obs_queries[size_t((h * W + p - P0) * D)], run.query(l) + h * D, size_t(D) * sizeof(float));
      if (p >= C) {
        const int64_t qi = p - C;
        for (int h = 0; h < H; ++h) {
          std::memcpy(&ly.queries[size_t((h * Q + qi) * D)], run.query(l) + h * D, size_t(D) * sizeof(float));
          if (model_attn_out)
            std::memcpy(&(*model_attn_out)[size_t(l)][size_t((h * Q + qi) * D)], run.attn_out(l) + h * D,
                        size_t(D) * sizeof(float));
        }
      }
    }
  }

  // ref_out: the protocol's exact attention (docs/protocol.md §1) of each recorded query over the first C cached tokens.
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<double> o(static_cast<size_t>(D));
  for (auto& ly : s.layers) {
    for (int h = 0; h < H; ++h) {
      const int g = h / kv_mul;
      const float* K = &ly.keys[size_t(g * T * D)];
      const float* V = &ly.values[size_t(g * T * D)];
      for (int64_t qi = 0; qi < Q; ++qi) {
        exact_attention_f64(K, V, C, D, &ly.queries[size_t((h * Q + qi) * D)], scale, 0.0, nullptr, nullptr,
                            o.data());
        for (int i = 0; i < D; ++i) ly.ref_out[size_t((h * Q + qi) * D + i)] = static_cast<float>(o[size_t(i)]);
      }
    }
  }
  return s;
}

DumpAttrs capture_attrs(const Llama2Model& model, const CaptureOptions& o) {
  const Llama2Config& c = model.config();
  DumpAttrs a;
  a.model = o.model_name.empty() ? std::filesystem::path(o.model_path).stem().string() : o.model_name;
  a.model_revision = "sha256:" + sha256_file(o.model_path);
  a.source = std::string("kvbench capture ") + KVB_VERSION;
  a.shape.n_layers = c.n_layers;
  a.shape.n_heads = c.n_heads;
  a.shape.n_kv_heads = c.n_kv_heads;
  a.shape.head_dim = c.head_size();
  a.rope_applied = 1;
  a.rope_style = "interleaved";
  a.rope_theta = 10000.0;
  a.qk_norm = 0;
  a.softmax_scale = 1.0 / std::sqrt(static_cast<double>(c.head_size()));
  a.attn_softcap = 0;
  a.orig_dtype = "float32";
  a.seed = static_cast<int64_t>(o.seed);
  return a;
}

int capture_dump(const CaptureOptions& o) {
  KVB_CHECK(o.sequences >= 1 && o.sequences <= 100000, UsageError, "--sequences: expected 1..100000, got {}",
            o.sequences);
  KVB_CHECK(o.temperature >= 0 && std::isfinite(o.temperature), UsageError,
            "--temperature: expected a finite value >= 0 (0 = greedy), got {}", o.temperature);
  const Llama2Model model = Llama2Model::load(o.model_path);
  const Llama2Config& c = model.config();
  KVB_CHECK(o.tokens >= 2 && o.tokens <= c.seq_len, UsageError,
            "--tokens: expected 2..{} (the seq_len of {}), got {}", c.seq_len, o.model_path, o.tokens);
  KVB_CHECK(o.queries >= 1 && o.queries < o.tokens, UsageError,
            "--queries: expected 1..{} (fewer than --tokens={}, so the context C = T - Q >= 1), got {}", o.tokens - 1,
            o.tokens, o.queries);
  KVB_CHECK(o.obs_window >= 0, UsageError, "--obs-window: expected >= 0 (0 = none), got {}", o.obs_window);

  std::vector<int32_t> file_ids;
  if (!o.token_file.empty()) {
    file_ids = read_token_file(o.token_file, c.vocab_size);
    const int64_t need = o.tokens * o.sequences;
    KVB_CHECK(static_cast<int64_t>(file_ids.size()) >= need, DataError,
              "{}: expected at least --tokens x --sequences = {} x {} = {} ids, found {}", o.token_file, o.tokens,
              o.sequences, need, file_ids.size());
  }

  WriterOptions wo;
  wo.dtype = DType::kFloat32;
  wo.chunk_tokens = 0;
  KvDumpWriter writer(o.out_path, capture_attrs(model, o), wo);
  // Progress (a terminal only): tokens recorded, one update per sequence (generated, then recorded).
  ProgressLine progress(progress_allowed(), static_cast<int64_t>(o.sequences) * o.tokens);
  for (int s = 0; s < o.sequences; ++s) {
    progress.show(fmt::format("tokens recorded; sequence s{}: {}", s, file_ids.empty() ? "generating" : "recording"));
    std::vector<int32_t> tokens;
    if (!file_ids.empty()) {
      tokens.assign(file_ids.begin() + s * o.tokens, file_ids.begin() + (s + 1) * o.tokens);
    } else {
      const uint64_t seed = derive_seed(o.seed, {uint64_t(s)});
      std::vector<int32_t> prompt;
      if (o.temperature == 0 && s > 0) {
        // Greedy decoding from BOS gives the same tokens every time: sequence s >= 1 is forced to start
        // BOS, x with a seeded token x (ids >= 3: not unk/BOS/EOS), then continues greedily.
        Rng rng(derive_seed(seed, {0x70726f6dull}));
        prompt = {kLlama2Bos, static_cast<int32_t>(3 + rng.below(uint64_t(std::max(1, c.vocab_size - 3))))};
        if (prompt[1] >= c.vocab_size) prompt.resize(1);
      }
      tokens = generate_tokens(model, o.tokens, o.temperature, seed, prompt);
    }
    if (file_ids.empty()) progress.show(fmt::format("tokens recorded; sequence s{}: recording", s));
    writer.write_sequence(record_sequence(model, tokens, o.queries, fmt::format("s{}", s), nullptr, o.obs_window));
    progress.step(fmt::format("tokens recorded; sequence s{} written", s), static_cast<int64_t>(tokens.size()));
  }
  progress.finish();
  writer.close();
  return o.sequences;
}

}  // namespace kvb
