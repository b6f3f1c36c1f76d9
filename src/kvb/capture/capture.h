#pragma once
/// `kvbench capture`: run a llama2.c checkpoint over a token sequence and record its real post-RoPE
/// keys, values and queries into a kvdump (docs/dump-format.md §2), with ref_out computed in float64 over the
/// first C = T - Q cached tokens (the evaluation protocol of docs/protocol.md §1).
#include <cstdint>
#include <string>
#include <vector>

#include "kvb/capture/llama2.h"
#include "kvb/io/kvdump.h"

namespace kvb {

inline constexpr int kLlama2Bos = 1;

struct CaptureOptions {
  std::string model_path;
  std::string out_path;
  std::string model_name;  ///< root attr `model`; empty = the checkpoint's file stem
  int64_t tokens = 256;    ///< T per sequence (<= the model's seq_len)
  int64_t queries = 32;    ///< Q: queries recorded at positions C..T-1
  int sequences = 1;
  uint64_t seed = 1234;
  double temperature = 0;  ///< 0 = greedy argmax; > 0 = run.c-style sampling with kvb::Rng
  std::string token_file;  ///< whitespace-separated ids; sequence s uses ids [s*T, (s+1)*T)
  int64_t obs_window = 32;  ///< W observation queries: the prompt positions C-W..C-1 (clamped to C; 0 = none)
};

/// Token ids of one sequence: BOS, then the model's own continuation (greedy argmax when temperature
/// is 0, else sampling from softmax(logits / temperature) with Rng(seed)). `prompt` (which must start
/// with BOS when non-empty) is forced before generation continues.
std::vector<int32_t> generate_tokens(const Llama2Model& model, int64_t n, double temperature, uint64_t seed,
                                     const std::vector<int32_t>& prompt = {});

/// Whitespace-separated non-negative ids from `path`, each checked against [0, vocab). DataError on a
/// missing file, a non-integer word or an id out of range.
std::vector<int32_t> read_token_file(const std::string& path, int vocab);

/// Model-side attention outputs for the recorded queries: [L][n_heads, Q, head_dim]. The model's own
/// attention at position p covers tokens 0..p (not the protocol's first C only).
using ModelAttnOut = std::vector<std::vector<float>>;

/// Runs the model over `tokens` (T = tokens.size()) and fills one kvdump sequence: keys/values of every
/// layer and KV head for all T positions, queries of every head at positions C..T-1 (C = T - Q), and
/// ref_out over the first C tokens (float64 exact attention of the recorded float32 tensors). With
/// obs_window W > 0 (clamped to C) also the observation queries: the post-RoPE queries the forward pass
/// computed at the prompt positions C-W..C-1 (obs_positions / obs_queries, docs/dump-format.md §1.2).
SequenceData record_sequence(const Llama2Model& model, const std::vector<int32_t>& tokens, int64_t queries,
                             const std::string& id, ModelAttnOut* model_attn_out = nullptr, int64_t obs_window = 0);

/// Root attributes for a dump captured from `model`.
DumpAttrs capture_attrs(const Llama2Model& model, const CaptureOptions& o);

/// The whole command: load, generate or read tokens, record every sequence, write the dump atomically.
/// Returns the number of sequences written.
int capture_dump(const CaptureOptions& o);

/// SHA-256 of a file's bytes as 64 lowercase hex digits (DataError when unreadable).
std::string sha256_file(const std::string& path);
/// SHA-256 of a byte string (for tests).
std::string sha256_hex(const void* data, size_t n);

}  // namespace kvb
