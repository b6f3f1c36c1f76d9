#pragma once
/// TurboQuant (Zandieh, Daliri, Hadian, Mirrokni; arXiv 2504.19874; docs/codecs.md §8.1): keys and values
/// rotated by a seeded random rotation Π, every rotated coordinate of the unit vector u = x/‖x‖ quantized by
/// the data-oblivious Lloyd–Max codebook of the coordinate density of a uniform point on S^{n−1} (computed by
/// kernels/cpu/lloyd_max.h, never typed in), ‖x‖ in fp16 (TurboQuant_mse, Algorithm 1). TurboQuant_prod
/// (Algorithm 2) spends b−1 bits on _mse and one on the residual r = x − x̂_mse: sign(S r) with S a d×d
/// Gaussian (QJL with m = n) and γ = ‖r‖ in fp16, so inner products are unbiased:
///   <q, x̂> = ‖x‖·<Π q, c[idx]> + sqrt(π/2)/n · γ · <S Π q, z>.
/// kvbench applies S to the rotated residual Π r (S Π is again an i.i.d. Gaussian matrix, so this is the
/// paper's estimator with S' = S Πᵀ), which keeps scoring and the value sum in the rotated domain: the layer
/// transforms each query once (q' = [Π q ; S Π q]) and un-transforms each output once
/// (o = Πᵀ (Σ_t p_t ‖v_t‖ c[idx_t] + Sᵀ Σ_t p_t κ γ_t z_t)); the cache is never decoded to dense rows.
///
/// Outlier-channel split {n_out, b_out, b_reg} (the paper's KV experiments): per (layer, KV head, K or V)
/// the n_out channels of largest RMS over the encoded prefill (ties: lower channel) form their own TurboQuant
/// instance at b_out = b_reg + out_extra bits, the other channels one at b_reg; each instance has its own
/// rotation, codebook, norms and (prod) sketch; the channel list is stored once (fixed storage).
///
/// Layout per part p ∈ {k, v}, per KV head, per token (instances s in order: outliers first, then regular):
///   <p>.codes  [H][C][code_bytes]  one little-endian bitstream: instance s's n_s codes of mb_s bits each
///                                   (mb = b for mse, b−1 for prod), coordinate i at bit off_s + i·mb_s
///   <p>.norm   [H][C][#(mb_s > 0)]  fp16 ‖x_s‖ (saturating at 65504)
///   <p>.qjl    [H][C][Σ ⌈n_s/8⌉]    prod: sign bits of S_s Π_s r_s (bit i of byte j = row 8j + i; 1 iff > 0)
///   <p>.rnorm  [H][C][#prod]        prod: fp16 γ_s = ‖r_s‖
///   fixed: <p>.channels [H][n_out] (1 byte each, 2 above head_dim 256), codebooks (fp32 centroids of every
///   instance), seeds (8 bytes per KV head: Π and S of every instance derive from it).
/// Encode runs in float64 in a fixed order (no FMA; kvb/core/hd.h dmul_rn/dadd_rn) so every backend stores
/// the same bytes; the codebook, Π and S are computed once on the host.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cpu/lloyd_max.h"
#include "kvb/core/codec.h"
#include "kvb/core/registry.h"

namespace kvb::codecs {

struct TurboParams {
  std::string k_variant = "prod", v_variant = "mse";
  int k_bits = 3, v_bits = 3;
  std::string rotation = "qr";  ///< "qr" (Haar, from QR of a Gaussian) or "hadamard" (randomized, blocked)
  int n_out = 0;                ///< outlier channels per part (0 = no split)
  int out_extra = 1;            ///< outlier instance bits = regular bits + out_extra
  void check(int head_dim) const;
  std::string label() const;
  /// Stored bits per token per KV head of one part at head_dim d (codes, norms, sketches; what storage counts).
  int64_t part_bits(bool key, int d) const;
};

namespace turbo {

/// One TurboQuant instance (a channel subset of one part of one KV head).
struct Instance {
  std::vector<int> channels;  ///< ascending channels of head_dim
  int n = 0;                  ///< channels.size()
  int bits = 0, mb = 0;       ///< total bits per coordinate, bits of its _mse codes (b or b−1)
  bool prod = false;
  std::vector<double> pi;     ///< n×n rotation, row-major (y = Π u)
  std::vector<double> s;      ///< n×n Gaussian (prod only)
  std::vector<double> pit, st;  ///< Πᵀ and Sᵀ (row-major), the float64 encoder's layout
  std::vector<float> pi32, s32;
  std::shared_ptr<const kernels::lloyd::Codebook> cb;  ///< 2^mb levels (null when mb = 0)
  std::vector<float> c32;     ///< centroids as float
  int code_bit_off = 0;       ///< bit offset of its codes in the row
  int norm_slot = -1, sign_off = -1, rnorm_slot = -1;  ///< byte offset / slot indices in their rows
};

/// The instances of one part (K or V) of one KV head, and its row sizes.
struct Part {
  std::vector<Instance> inst;
  int code_bytes = 0, norms = 0, sign_bytes = 0, rnorms = 0;
  int width = 0;  ///< floats of a decoded row / transformed query: Σ n_s·(1 + prod_s)
  int n_out = 0;  ///< outlier channels (inst[0]) or 0
};

/// The codebook of the coordinate density on S^{n−1} at `levels` levels, symmetrized; cached per (n, levels).
std::shared_ptr<const kernels::lloyd::Codebook> sphere_codebook(int n, int levels);

/// Outlier channels of x[C][d]: the n_out of largest Σ_t x² (ties to the lower channel), ascending.
std::vector<int> outlier_channels(const float* x, int64_t C, int d, int n_out);

/// Builds the part of KV head g of `layer` (channels from the cache x[C][d] when n_out > 0).
Part make_part(const TurboParams& p, bool key, int layer, int g, const float* x, int64_t C, int d, uint64_t seed);

/// The seed of KV head g of `layer` (every matrix of its instances derives from it).
uint64_t head_seed(uint64_t run_seed, int layer, int g);

/// Encodes one vector x[d] into its rows (codes, norms, signs, rnorms; zero-initialised by the caller).
void encode_vector(const Part& P, const float* x, uint8_t* codes, uint16_t* norms, uint8_t* signs, uint16_t* rnorms);

/// q'[width] = per instance [Π_s q_s ; S_s Π_s q_s] (float32).
void transform_query(const Part& P, const float* q, float* qt);
/// o[d] from an accumulated row acc[width]: per instance Π_sᵀ (a_s + S_sᵀ b_s), scattered to its channels.
void untransform_output(const Part& P, const float* acc, float* o, int d);

/// Decoded row[width] of one token: per instance [‖x_s‖·c[idx_i]]_i then [κ_s γ_s σ_i]_i (κ = sqrt(π/2)/n_s).
void decode_row(const Part& P, const uint8_t* codes, const uint16_t* norms, const uint8_t* signs,
                const uint16_t* rnorms, float* row);

/// The storage items of a layer whose parts (K, V) of every KV head are k[H], v[H] over C tokens: the CPU
/// layer's and the device layer's (same names, kinds, bytes and order).
Storage layer_storage(const std::vector<Part>& k, const std::vector<Part>& v, int64_t C, int d);

/// The stored outlier-channel lists of a part's heads (inst[0]'s channels; 1 byte each, 2 above head_dim 256).
std::vector<uint8_t> channel_bytes(const std::vector<Part>& heads, int d);

}  // namespace turbo

std::unique_ptr<EncodedLayer> turbo_encode_cpu(const TurboParams& p, int layer, const LayerKV& kv, const CodecContext& ctx);
/// The CUDA backend (turbo_gpu.cpp): the same bytes, encoded and attended on the device.
std::unique_ptr<EncodedLayer> turbo_encode_cuda(const TurboParams& p, int layer, const LayerKV& kv, const CodecContext& ctx);
std::unique_ptr<EncodedLayer> turbo_encode_ref(const TurboParams& p, int layer, const LayerKV& kv, const CodecContext& ctx);

CodecEntry turboquant_entry();

}  // namespace kvb::codecs
