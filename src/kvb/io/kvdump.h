#pragma once
/// kvdump HDF5 format, version 1 (docs/dump-format.md): a validating, streaming reader and a writer.
/// The reader checks the whole schema on open (attributes, shapes, dtypes, GQA divisibility, query
/// positions >= context_len; the optional observation queries of §1.2: obs_positions strictly
/// increasing in [0, context_len), obs_queries in every layer in the keys' dtype) and then reads one
/// (sequence, layer[, KV head]) at a time through hyperslab selections, converting float16 / bfloat16
/// (uint16 + attribute dtype="bfloat16") / float32 to float32. Every tensor read is checked for NaN/Inf.
/// All failures throw kvb::DataError (exit 3) whose message names the file, the HDF5 path, and what was
/// expected vs found.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kvb/core/tensor.h"

namespace kvb {

enum class DType { kFloat16, kBFloat16, kFloat32 };
const char* to_string(DType t);
/// "float16" | "bfloat16" | "float32"; throws UsageError otherwise.
DType parse_dtype(const std::string& s);

/// Root attributes of a dump.
struct DumpAttrs {
  std::string model = "unknown";
  std::string model_revision = "unknown";
  std::string source = "unknown";
  ModelShape shape;
  int rope_applied = 1;
  std::string rope_style = "half";  ///< "half" | "interleaved" | "none"
  double rope_theta = 10000.0;
  int qk_norm = 0;
  double softmax_scale = 0;  ///< usually 1/sqrt(head_dim); the writer stores 1/sqrt(head_dim) when 0
  double attn_softcap = 0;   ///< 0 = none
  std::string orig_dtype = "float16";
  std::optional<int64_t> seed;
  std::string created_utc;
};

struct SequenceInfo {
  std::string id;         ///< group name under /sequences
  int64_t n_tokens = 0;   ///< T
  int64_t context_len = 0;  ///< C
  int64_t n_queries = 0;    ///< Q
  std::vector<int64_t> query_positions;  ///< [Q], each >= C
  std::vector<int64_t> sliding_window;   ///< [n_layers], 0 = global
  bool has_ref_out = false;   ///< every layer has ref_out
  bool has_tokens = false;
  /// [W] positions of the observation queries (optional `obs_positions`, docs/dump-format.md §1.2): strictly
  /// increasing, each < C (recorders write the last W prompt tokens, C-W..C-1). Empty = none; when present,
  /// every layer has `obs_queries` [n_heads, W, head_dim].
  std::vector<int64_t> obs_positions;
  bool has_obs() const { return !obs_positions.empty(); }
};

class KvDumpReader {
 public:
  /// Opens and validates the whole schema. Throws DataError on any violation.
  explicit KvDumpReader(const std::string& path);
  /// The same reader over an in-memory HDF5 file image (`size` bytes, copied; HDF5's core driver): every check
  /// of the path constructor after the file is open, with `name` in place of the path in messages. checksum()
  /// is the FNV-1a of the image. Used by the fuzzer (tests/fuzz/fuzz_kvdump.cpp).
  KvDumpReader(const std::string& name, const void* image, size_t size);
  ~KvDumpReader();
  KvDumpReader(const KvDumpReader&) = delete;
  KvDumpReader& operator=(const KvDumpReader&) = delete;

  const std::string& path() const;
  const DumpAttrs& attrs() const;
  DType dtype() const;  ///< dtype of keys/values/queries (the same for all)
  const std::vector<SequenceInfo>& sequences() const;

  /// K and V of tokens [t0, t1) of every KV head of one layer (hyperslab reads, one KV head at a time).
  LayerKV read_kv(size_t seq, int layer, int64_t t0, int64_t t1) const;
  /// One KV head's K and V for tokens [t0, t1): k_out and v_out are [t1 - t0, head_dim].
  void read_kv_head(size_t seq, int layer, int kv_head, int64_t t0, int64_t t1, float* k_out, float* v_out) const;
  /// The first `max_queries` (all when <= 0 or larger than Q) recorded queries of every head of one
  /// layer, and their ref_out when present.
  LayerQueries read_queries(size_t seq, int layer, int64_t max_queries) const;
  /// The observation queries of one layer with positions relative to a cache that starts at token t0
  /// (positions[i] = obs_positions[i] - t0; queries before t0 are dropped). Empty when the dump has none.
  ObsQueries read_obs(size_t seq, int layer, int64_t t0) const;
  /// Token ids when the dump has them (empty otherwise).
  std::vector<int32_t> read_tokens(size_t seq) const;

  /// A cheap content fingerprint: FNV-1a 64 over the file's bytes, as 16 hex digits (for results).
  std::string checksum() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// One sequence to write. All tensors float32 in memory; the writer converts to the file dtype.
struct SequenceData {
  std::string id;
  int64_t n_tokens = 0;
  int64_t context_len = 0;
  std::vector<int64_t> query_positions;  ///< [Q]
  std::vector<int32_t> tokens;           ///< [T] or empty
  std::vector<int64_t> obs_positions;    ///< [W] or empty: observation query positions, increasing, each < C
  struct Layer {
    std::vector<float> keys;     ///< [n_kv_heads, T, head_dim]
    std::vector<float> values;   ///< [n_kv_heads, T, head_dim]
    std::vector<float> queries;  ///< [n_heads, Q, head_dim]
    std::vector<float> ref_out;  ///< [n_heads, Q, head_dim] or empty
    std::vector<float> obs_queries;  ///< [n_heads, W, head_dim]; required iff obs_positions is non-empty
    int64_t sliding_window = 0;
  };
  std::vector<Layer> layers;
};

struct WriterOptions {
  DType dtype = DType::kFloat16;
  int64_t chunk_tokens = 1024;  ///< chunk = (1 head, chunk_tokens, head_dim); 0 = contiguous
  int deflate = 0;              ///< 0 = no compression, 1..9 deflate level
};

/// Writes a kvdump file (used by `gen`, `capture` and the tests). The file is written to a temporary
/// name and renamed on close(), so a crash never leaves a half-written dump under the final name.
class KvDumpWriter {
 public:
  KvDumpWriter(const std::string& path, const DumpAttrs& attrs, WriterOptions opts = {});
  ~KvDumpWriter();  ///< removes the temporary file when close() was not called
  KvDumpWriter(const KvDumpWriter&) = delete;
  KvDumpWriter& operator=(const KvDumpWriter&) = delete;

  /// Writes one whole sequence (begin_sequence + write_layer for every layer + end_sequence).
  /// Shapes that do not match the root attributes, C outside [1, T], Q = 0, a query position < C,
  /// obs_positions not strictly increasing or outside [0, C), or obs_queries given without
  /// obs_positions (or missing in a layer when they are given) throw UsageError before anything is
  /// written; a value that is not finite (or overflows float16 / bfloat16) throws DataError. After an
  /// exception in the middle of a sequence the writer can only be destroyed (which removes the
  /// temporary file).
  void write_sequence(const SequenceData& seq);

  /// Streaming form, so a generator or recorder holds one layer at a time: begin_sequence takes the
  /// sequence header from `seq` (id, n_tokens, context_len, query_positions, tokens, obs_positions;
  /// `seq.layers` is ignored), then write_layer(0), write_layer(1), ... in order, then end_sequence().
  void begin_sequence(const SequenceData& seq);
  void write_layer(int layer, const SequenceData::Layer& data);
  void end_sequence();

  /// Closes the file and renames it to its final name. Throws UsageError when a sequence is still
  /// open or none was written (a dump needs >= 1 sequence), RuntimeError on I/O failure.
  void close();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvb
