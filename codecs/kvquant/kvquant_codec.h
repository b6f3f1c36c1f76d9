#pragma once
/// KVQuant (Hooper, Kim, Mohammadzadeh, Mahoney, Shao, Keutzer, Gholami; arXiv 2401.18079; NeurIPS 2024), as its
/// reference code (SqueezeAILab/KVQuant, quant/kvquant/simquant_module_quantizer.py) computes it:
///
///  - Keys per channel, BEFORE RoPE: the dump's post-RoPE keys are un-rotated exactly with their positions
///    (kernels/cpu/rope.h; LayerKV::pos0 + row), quantized, and RoPE is re-applied to the decoded key when
///    scoring. Dumps whose keys carry no RoPE (rope_applied = 0 or style "none") need no un-rotation; the
///    report says which ran. `pre_rope: false` quantizes the post-RoPE keys (the paper's ablation).
///  - Per-channel normalization calibrated offline (the paper's §3.6 for keys): per (layer, KV head, channel)
///    the (1 − f/2) and f/2 percentiles u, l of the calibration keys (numpy's linear interpolation; min and max
///    when f = 0) give offset (u + l)/2 and range (u − l)/2; y = (x − offset)/range.
///  - Values per token, online: outliers are x ≥ u or x ≤ l with u, l that token's (1 − f/2), f/2 percentiles
///    (torch.quantile, inclusive as get_outliers_dynamic); offset and range from the max and min of the other
///    channels and the token's (lower) median; both stored as fp16 and used rounded.
///  - Non-uniform levels (NUQ): one 2^b-level codebook per layer for keys and one for values, fitted by 1-D
///    k-means on the normalized non-outlier calibration values of every KV head and channel. `kmeans: fisher`
///    (default) weights each value by its sensitivity; the paper's Fisher information needs the model loss's
///    gradients, which a KV dump cannot give, so kvbench uses the same construction with the layer's attention
///    output as the model: the diagonal Fisher information of o under unit Gaussian noise, from the calibration
///    prompt's observation queries (LayerKV::obs): key element (t, c): Σ_q (σ'·p_t·(R_tᵀq)_c)²·‖v_t − o_q‖²,
///    value element (t, c): Σ_q p_t², with p the query's causal softmax and σ' the softcap's derivative.
///    `kmeans: plain` is unweighted. Initial centroids at weighted quantiles (j + ½)/2^b, then Lloyd until no
///    assignment changes (at most 100 iterations), deterministic.
///  - Nearest level: code = #{j : y > (L_j + L_{j+1})/2} (float; ties to the lower level), y clamped by it.
///  - Dense-and-sparse: a fraction f (`outliers`, default 1%) of the values are kept in fp16 with their channel
///    index (keys: outside the calibrated per-channel thresholds, so the fraction on evaluation data is what the
///    data gives; values: per token as above). Every one is counted.
///  - Q-Norm (`qnorm`, the paper's fix for 2-bit distribution shift): the decode levels are the assignment
///    levels times std₁/std₂ plus m₁ − m₂·std₁/std₂ (mean and std of the normalized calibration values before
///    (₁) and after (₂) quantization).
///
/// Layout per part p ∈ {k, v}, per KV head (H heads, C tokens, b bits, d channels):
///   <p>.codes      [H][C][⌈d·b/8⌉]  little-endian bitstream of b-bit level indices (kernels/formats/uniform.h)
///   v.scale        [H][C][2]        fp16 offset and range of each value row
///   <p>.sp_count   [H][C]           outliers of the row (1 byte; 2 above head_dim 255)
///   <p>.sp_block   [H][⌈C/64⌉]      uint32: index of the first outlier of each 64-row block within its head
///   <p>.sp_index   [nnz]            channel of each outlier (1 byte; 2 above head_dim 256), rows in order
///   <p>.sp_value   [nnz]            its fp16 value
///   fixed: k.channel_norm [H][d][2] float32 offset and range (calibrated), <p>.levels 2^b float32 (twice with
///   qnorm: assignment then decode levels), <p>.sp_heads [H + 1] uint64 first outlier of each head.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "codecs/kvquant/kvquant_row.h"
#include "kernels/cpu/rope.h"
#include "kvb/core/codec.h"
#include "kvb/core/registry.h"

namespace kvb::codecs {

struct KvquantParams {
  int k_bits = 3, v_bits = 3;
  double outliers = 0.01;            ///< f: fraction kept in fp16 (0 = dense only)
  std::string kmeans = "fisher";     ///< "fisher" | "plain"
  bool qnorm = false;
  bool pre_rope = true;

  bool operator==(const KvquantParams&) const = default;
  /// Every parameter takes part in the fit (thresholds, levels): states are shared only between equal ones.
  bool trains_like(const KvquantParams& o) const { return *this == o; }
  void check(int head_dim) const;
  std::string label() const;
  /// Expected stored bits per token per KV head at head_dim d, K and V together (the budget rule): codes, value
  /// scales, counts, block index (amortized), and outliers at the fraction f (keys) or the per-token quantile
  /// rule (values: values_outliers_per_row).
  double nominal_bits(int d) const;
};

namespace kvquant {

/// numpy.percentile(x, 100·q) with linear interpolation, of n values (x is reordered). n >= 1.
double percentile(float* x, int64_t n, double q);

/// Outliers per value row of d distinct values under the per-token rule (x ≥ u or x ≤ l at quantiles 1 − f/2,
/// f/2): 0 when f = 0.
int values_outliers_per_row(int d, double f);

/// 1-D weighted k-means of n points y[i] (weights w[i] >= 0; null = all 1) into k levels, ascending, as the
/// header describes. Returns the number of Lloyd iterations run.
int kmeans_1d(const float* y, const float* w, int64_t n, int k, std::vector<float>* levels);

/// Midpoints between adjacent levels (k − 1 floats); the nearest-level rule is kvquant_row.h's nearest().
std::vector<float> bounds_of(const std::vector<float>& levels);

/// What fit() learned for one layer, immutable: every backend encodes from it.
struct Trained final : TrainedLayer {
  KvquantParams fitted_with;
  int kv_heads = 0, d = 0;
  bool pre_rope = false;                   ///< keys were (and will be) un-rotated
  std::vector<float> k_norm;               ///< [H][d][2] offset, range
  std::vector<float> k_assign, k_levels;   ///< 2^kb assignment and decode levels (equal without qnorm)
  std::vector<float> v_assign, v_levels;   ///< 2^vb
  std::vector<float> k_bounds, v_bounds;   ///< midpoints of the assignment levels
  // report
  std::string weighting;                   ///< "fisher (N observation queries)" or "plain"
  std::string rope_note;
  int64_t calib_tokens = 0;
  double k_calib_outlier_frac = 0, v_calib_outlier_frac = 0;
  int k_iters = 0, v_iters = 0;
};

/// Fits one layer on calibration caches (post-RoPE keys as the dump stores them).
std::shared_ptr<const Trained> fit(const KvquantParams& p, int layer, const std::vector<const LayerKV*>& calib,
                                   const CodecContext& ctx);

/// RoPE of a context, or kNone when the keys carry none (or pre_rope is off).
kernels::rope::Style key_rope(const KvquantParams& p, const CodecContext& ctx);

/// The stored buffers of one part (K or V) of every KV head of a layer (header layout).
struct Part {
  int bits = 0, row_bytes = 0, count_bytes = 1, index_bytes = 1;
  int64_t blocks = 0;  ///< ⌈C/64⌉
  std::vector<uint8_t> codes;
  std::vector<uint16_t> scale;     ///< values only
  std::vector<uint8_t> count;      ///< [H][C][count_bytes]
  std::vector<uint32_t> block;     ///< [H][blocks]
  std::vector<uint64_t> heads;     ///< [H + 1]
  std::vector<uint8_t> index;      ///< [nnz][index_bytes]
  std::vector<uint16_t> value;     ///< [nnz]
  int count_at(int g, int64_t C, int64_t t) const {
    const uint8_t* p = &count[(static_cast<size_t>(g) * C + t) * count_bytes];
    return count_bytes == 1 ? p[0] : p[0] | (p[1] << 8);
  }
  int index_at(uint64_t i) const {
    const uint8_t* p = &index[i * index_bytes];
    return index_bytes == 1 ? p[0] : p[0] | (p[1] << 8);
  }
  /// Position in index/value of the first outlier of row t of head g.
  uint64_t first_outlier(int g, int64_t C, int64_t t) const;
};

/// The encoded layer's bytes: both parts, the keys after un-rotation (when the state's pre_rope).
struct Encoded {
  int H = 0, d = 0;
  int64_t C = 0, pos0 = 0;
  Part k, v;
};
/// Throws when the cache does not fit the state (head count, head_dim, RoPE un-rotation): every backend's encode.
void check_fits(const Trained& s, const LayerKV& kv, kernels::rope::Style rope);
Encoded encode(const Trained& s, const LayerKV& kv, kernels::rope::Style rope, double theta);

/// Storage items (same names, kinds, bytes and order for every backend).
Storage storage(const Trained& s, const Encoded& e);
std::vector<NamedBuffer> buffers(const Trained& s, const Encoded& e);

}  // namespace kvquant

std::unique_ptr<EncodedLayer> kvquant_encode_cpu(const KvquantParams& p, std::shared_ptr<const kvquant::Trained> s,
                                                 const LayerKV& kv, const CodecContext& ctx);
/// The CUDA backend (kvquant_gpu.cpp): the same bytes, encoded and attended on the device.
std::unique_ptr<EncodedLayer> kvquant_encode_cuda(const KvquantParams& p, std::shared_ptr<const kvquant::Trained> s,
                                                  const LayerKV& kv, const CodecContext& ctx);
std::unique_ptr<EncodedLayer> kvquant_encode_ref(const KvquantParams& p, std::shared_ptr<const kvquant::Trained> s,
                                                 const LayerKV& kv, const CodecContext& ctx);

CodecEntry kvquant_entry();

}  // namespace kvb::codecs
