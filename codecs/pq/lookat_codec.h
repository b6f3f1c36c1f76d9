#pragma once
/// lookat: LOOKAT (Karmore, arXiv 2601.10155; docs/codecs.md §9) — product-quantized keys scored with lookup
/// tables (asymmetric distance computation, as in vector search), values in fp16 (the paper) or, as a
/// labelled harness extension (docs/codecs.md §9.5 pitfall 5), per-token asymmetric INT8/INT4 (codecs/quant).
///
///  - fit: per (layer, KV head) m codebooks of K = 2^nbits centroids of d_sub = d/m channels, trained by
///    k-means++ and Lloyd iterations (fp32) on calibration keys only; stored as fp16 (kFixed bytes).
///  - encode: per key and subspace the nearest centroid (squared L2 in float64, ties to the lowest index),
///    one uint8 code per subspace.
///  - scores: per query m tables LUT_i[c] = <q_i, C_i[c]>, ŝ_t = scale·Σ_i LUT_i[code_ti]; keys are never
///    rebuilt.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kvb/core/codec.h"
#include "kvb/core/error.h"
#include "kvb/core/registry.h"

namespace kvb::codecs {

struct LookatParams {
  int subspaces = 4;          ///< m
  int nbits = 8;              ///< K = 2^nbits centroids per subspace (codes stored as one byte each)
  std::string values = "fp16";  ///< "fp16" (paper), "int8" or "int4" (extension)
  int value_group = 32;       ///< channels per (scale, min) group of int values
  int iters = 25;             ///< Lloyd iterations after k-means++
  int train_points = 16384;   ///< calibration keys sampled per (layer, KV head) for k-means

  /// The parameters, each bound to its field; from_json reads a resolved parameter object.
  static const ParamTable<LookatParams>& table();
  static LookatParams from_json(const Json& resolved) { return table().from_json(resolved); }
  bool operator==(const LookatParams&) const = default;
  /// Whether codebooks trained with these parameters are the ones `o` trains: everything but the value
  /// storage, which is encoded after training from the same codebooks.
  bool trains_like(const LookatParams& o) const;
  void check(int head_dim) const;
  std::string label() const;
  int centroids() const { return 1 << nbits; }
  bool int_values() const { return values != "fp16"; }
  int value_bits() const {
    if (values == "fp16") return 16;
    if (values == "int8") return 8;
    KVB_CHECK(values == "int4", UsageError, "lookat: values \"{}\" is none of fp16, int8, int4", values);
    return 4;
  }
  /// Bytes per token per KV head, K and V together: m code bytes + the value row (+ its group params).
  double bytes_per_token(int head_dim) const;
  /// Codebook bytes per (layer, KV head): K·d fp16 values.
  double codebook_bytes(int head_dim) const { return 2.0 * centroids() * head_dim; }
};

/// One layer's trained codebooks: [kv_heads][m][K][d_sub], fp16-rounded (the stored form) held as floats.
struct LookatCodebooks {
  int kv_heads = 0, m = 0, K = 0, dsub = 0;
  std::vector<float> c;       ///< [kv_heads][m][K][dsub], each value exactly a binary16
  std::vector<uint16_t> c16;  ///< the same, as stored (binary16 bits)
  double train_mse = 0;       ///< mean squared error per key of the calibration sample (fp32 centroids)
  int64_t train_points = 0;   ///< keys used per KV head
  const float* head(int g) const { return c.data() + static_cast<size_t>(g) * m * K * dsub; }
  const float* sub(int g, int i) const { return head(g) + static_cast<size_t>(i) * K * dsub; }
};

namespace pq {

/// k-means on x[n][dsub] (row stride `stride` floats): k-means++ seeding (seeded), then up to `iters` Lloyd
/// iterations (fp32 assignment, float64 means; stops when no assignment changes). An empty cluster takes
/// the point farthest from its centroid. With n <= K the centroids are the points (repeated).
/// Writes centroids[K][dsub]; returns the mean squared error per point of the final assignment.
double kmeans(const float* x, int64_t n, int64_t stride, int dsub, int K, int iters, uint64_t seed, float* centroids);

/// Trains one codebook set per KV head on the calibration caches (train_points keys per head, sampled
/// without replacement, seeded) and rounds it to fp16.
LookatCodebooks train(const LookatParams& p, const std::vector<const LayerKV*>& calib, int layer, uint64_t seed);

/// Nearest centroid (squared L2 summed in float64 in channel order, ties to the lowest index) of each of
/// the m subvectors of the n keys x[n][d]; writes codes[n][m].
void encode_codes(const float* x, int64_t n, int d, int m, int K, const float* cb, uint8_t* codes);

/// Lookup tables lut[i][c] = <q_i, C_i[c]> (float), i < m, c < K.
void build_luts(const float* q, int d, int m, int K, const float* cb, float* lut);

/// The same tables from centroids transposed to ct[m][dsub][K] (each entry summed in channel order, so
/// the loop over centroids vectorizes).
void luts_transposed(const float* q, int m, int dsub, int K, const float* ct, float* lut);

/// dots[t] = Σ_i lut[i·K + codes[t·m + i]] for t < n.
void table_sums(const float* lut, const uint8_t* codes, int64_t n, int m, int K, float* dots);

/// Mean over n keys of ‖x − x̃‖² for codes against codebooks cb (float64).
double distortion(const float* x, int64_t n, int d, int m, int K, const float* cb, const uint8_t* codes);

}  // namespace pq

std::unique_ptr<EncodedLayer> lookat_encode_cpu(const LookatParams& p, const LookatCodebooks& cb, const LayerKV& kv,
                                                const CodecContext& ctx);
std::unique_ptr<EncodedLayer> lookat_encode_ref(const LookatParams& p, const LookatCodebooks& cb, const LayerKV& kv,
                                                const CodecContext& ctx);
/// The CUDA backend; defined only in builds with KVB_WITH_CUDA.
std::unique_ptr<EncodedLayer> lookat_encode_cuda(const LookatParams& p, const LookatCodebooks& cb, const LayerKV& kv,
                                                 const CodecContext& ctx);

CodecEntry lookat_entry();  ///< codecs/pq: LOOKAT (product-quantized keys, lookup-table scores)

}  // namespace kvb::codecs
