#pragma once
/// Token selection by repeated halving (docs/codecs.md §6): `balancekv` (BalanceKV, arXiv 2502.07861) picks the
/// half to keep with a self-balancing walk in the kernel's feature space; `uniform` runs the same halving
/// with fair coin signs — the baseline the paper beats. Both keep a per-token weight (a power of two) so
/// that the kept tokens stand for the dropped ones in the softmax sums.
///
/// Per (layer, KV head), the cache [C, d] splits into  [ sink | middle | window ]  with the first
/// min(sink, C) and the last min(window, C − sink) tokens kept verbatim in fp16. The middle's n tokens
/// are halved T times; each halving keeps exactly ⌊n/2⌋ tokens and multiplies their weights by 2 (the
/// balanced prefix) or 1 (the tail after the cut point), so ⌊n/2^T⌋ tokens survive with weights
/// w ∈ {1, 2, ..., 2^T}.
///
/// Storage (StorageItem names):
///   k.kept, v.kept    kCompressed  fp16 rows of the kept middle tokens, grouped by weight class
///                                  (heaviest first); `tokens` = n, the middle tokens they stand for
///   w.class_counts    kFixed       T + 1 int32 per KV head: how many kept rows carry weight 2^T, 2^(T−1),
///                                  ..., 1. Grouping the rows by class replaces a per-token weight byte,
///                                  so b_eff is exactly 16·2^−T (docs/codecs.md §6.1 allows either)
///   k.sink_window, v.sink_window  kBuffer  fp16 rows of the verbatim tokens
/// The positions of the kept tokens are held too, for held_tokens() (mass_lost, metrics over the held
/// set) only; attention never reads them (keys are post-RoPE, order is irrelevant), so they are not
/// counted as storage.
///
/// Attention (docs/codecs.md §6.3), kept row j of weight w_j, verbatim rows with weight 1:
///   consistent (default): logit_j = s_j + ln w_j, values as stored     => Num and Den weighted alike
///   repo:                 logit_j = s_j + T·ln 2, values × w_j/2^T     (the authors' decode branch)
/// scores() returns s_j = softmax_scale·<q, k̂_j> (softcap applied) for the held tokens — the codec's
/// estimate of each held token's logit — without the multiplicity bias; dropped tokens get 0 and are
/// ignored by the metrics (held_tokens()).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "kvb/core/codec.h"
#include "kvb/core/params.h"
#include "kvb/core/registry.h"

namespace kvb::codecs {

enum class SelectWalk { kBalance, kUniform };

struct SelectParams {
  SelectWalk walk = SelectWalk::kBalance;
  int levels = 2;            ///< T: halvings; keeps ⌊n/2^T⌋ of the middle
  double gamma = 4.0;        ///< γ: walk step
  double temp = 1.0;         ///< τ: kernel temperature
  double beta = 0.0;         ///< β: kernel offset
  int block_size = 128;      ///< B: tokens per independent walk
  int sink = 32;             ///< first tokens kept verbatim
  int window = 32;           ///< last tokens kept verbatim
  double const_denom = 0.025;  ///< c: added to the value kernel
  bool consistent = true;    ///< estimator: consistent (ln w bias) or repo (T ln 2 bias, scaled values)

  void check(int head_dim) const;
  std::string label() const;
  /// Steady-state bytes per middle token per KV head (K and V): 2^−T fp16 rows of K and V.
  double bytes_per_token(int head_dim) const { return 4.0 * head_dim / static_cast<double>(1 << levels); }
};

/// The verbatim / middle split of a C-token cache.
struct SelectSplit {
  int64_t sink = 0, mid = 0, window = 0;
  static SelectSplit of(const SelectParams& p, int64_t C) {
    SelectSplit s;
    s.sink = std::min<int64_t>(p.sink, C);
    s.window = std::min<int64_t>(p.window, C - s.sink);
    s.mid = C - s.sink - s.window;
    return s;
  }
  /// Middle tokens surviving T halvings of exactly ⌊n/2⌋ each.
  int64_t kept(int levels) const { return mid >> levels; }
};

/// Time and tokens spent in the walk (the halving decisions), summed over every encode of a codec.
struct WalkStats {
  std::atomic<int64_t> ns{0};
  std::atomic<int64_t> tokens{0};  ///< tokens entering a halving level, summed over levels and heads
};

using SelectEncodeFn = std::unique_ptr<EncodedLayer> (*)(const SelectParams&, int layer, const LayerKV&,
                                                         const CodecContext&, WalkStats*);

std::unique_ptr<EncodedLayer> select_encode_cpu(const SelectParams& p, int layer, const LayerKV& kv,
                                                const CodecContext& ctx, WalkStats* stats);
/// The CUDA backend (select_gpu.cpp); defined only in builds with KVB_WITH_CUDA.
std::unique_ptr<EncodedLayer> select_encode_cuda(const SelectParams& p, int layer, const LayerKV& kv,
                                                 const CodecContext& ctx, WalkStats* stats);
std::unique_ptr<EncodedLayer> select_encode_ref(const SelectParams& p, int layer, const LayerKV& kv,
                                                const CodecContext& ctx, WalkStats* stats);

/// The kept set of one KV head's middle after T halvings: indices into the middle (grouped by weight
/// class, heaviest first, by increasing index within a class) and their weights.
struct KeptSet {
  std::vector<int32_t> index;
  std::vector<int32_t> weight;
};

/// The CPU walk and halvings for one KV head (exposed for tests).
/// kmid, vmid: [n, d] rows of the head's middle.
KeptSet select_head_cpu(const SelectParams& p, const float* kmid, const float* vmid, int64_t n, int d,
                        uint64_t seed, int layer, int head);

/// Registry entries (codecs/select/select_entry.cpp).
CodecEntry balancekv_entry();
CodecEntry uniform_entry();

}  // namespace kvb::codecs
