/// polarquant reference: docs/codecs.md "polarquant" written literally, in float64, without polar_math.h's
/// transform, layout or bit packing. Per row: y = Π [x; 0], the polar transform level by level on explicit
/// vectors, each angle to the centroid at the smallest distance (exhaustive search; circular distance at
/// level 1), the radii rounded to binary16 (ref_dense.h round_f16_sat), then the tree rebuilt top-down from
/// the codes' float32 angles and x̂ = (Πᵀ ŷ)[0, d) — a dense copy of K̂ and V̂ (allowed here) attended by
/// kvbench's exact float64 attention. Shared with the CPU path only what defines the codec: the Haar matrix
/// of each seed (polar::rotation, i.e. kernels/cpu/orthogonal.h's generator) and the codebooks computed from
/// the level densities (polar::codebook). Storage from the byte formulas. The codes here are the definition
/// (the centroid nearest to atan2's angle); the CPU and CUDA encoders decide them from each node's pair by exact
/// sign tests against the boundaries (polar_math.h angle_code, no atan2), which agrees with this search except
/// where the angle lies within ~1 ulp of a boundary (atan2's own error; the comparisons are tolerance-based).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "codecs/common/baseline.h"
#include "codecs/common/ref_dense.h"
#include "codecs/polar/polar_codec.h"
#include "kvb/core/rng.h"

namespace kvb::codecs {

std::unique_ptr<EncodedLayer> polar_encode_ref(const PolarParams& p, int layer, const LayerKV& kv,
                                               const CodecContext& ctx) {
  const int d = kv.head_dim, L = p.levels, H = kv.kv_heads;
  const int64_t C = kv.tokens;
  const int block = 1 << L;
  const int dp = (d + block - 1) / block * block;
  const double two_pi = 2 * 3.14159265358979323846;
  // Codebooks: search over the float64 centroids, decode with the stored float32 angles.
  std::vector<std::vector<double>> search(L), stored(L);
  uint64_t codebook_entries = 0;
  for (int l = 0; l < L; ++l) {
    search[l] = polar::codebook(l + 1, p.bits[l]).centroids;
    for (double c : search[l]) stored[l].push_back(static_cast<double>(static_cast<float>(c)));
    codebook_entries += search[l].size();
  }
  std::vector<float> k_hat(kv.k.size()), v_hat(kv.v.size());
  for (int g = 0; g < H; ++g)
    for (int part = 0; part < 2; ++part) {
      const uint64_t seed = derive_seed(ctx.seed, {0x706f6c6172ull, static_cast<uint64_t>(layer), static_cast<uint64_t>(g),
                                                   static_cast<uint64_t>(part)});
      const auto rot = polar::rotation(dp, seed);  // held: P refers into it
      const std::vector<double>& P = rot->m64;  // row-major dp×dp
      std::vector<double> Pt(P.size());                                 // its transpose, for row access
      for (int i = 0; i < dp; ++i)
        for (int j = 0; j < dp; ++j) Pt[static_cast<size_t>(j) * dp + i] = P[static_cast<size_t>(i) * dp + j];
      const float* X = part == 0 ? kv.k_head(g) : kv.v_head(g);
      float* Xh = (part == 0 ? k_hat.data() : v_hat.data()) + static_cast<size_t>(g) * C * d;
      for (int64_t t = 0; t < C; ++t) {
        std::vector<double> y(dp, 0.0);  // y_i = Σ_j Π_ij·x_j, j ascending (loops ordered for row access)
        for (int j = 0; j < d; ++j)
          for (int i = 0; i < dp; ++i) y[i] += Pt[static_cast<size_t>(j) * dp + i] * static_cast<double>(X[t * d + j]);
        // Bottom-up: radii[0] = y, radii[l] = the norms of consecutive pairs of radii[l-1]; codes per level.
        std::vector<std::vector<double>> radii{y};
        std::vector<std::vector<int>> codes(L);
        for (int l = 1; l <= L; ++l) {
          const std::vector<double>& below = radii.back();
          std::vector<double> up(below.size() / 2);
          for (size_t i = 0; i < up.size(); ++i) {
            const double a = below[2 * i], b = below[2 * i + 1];
            up[i] = std::sqrt(a * a + b * b);
            double psi = std::atan2(b, a);
            if (l == 1 && psi < 0) psi += two_pi;
            int best = 0;
            double best_dist = std::numeric_limits<double>::infinity();
            for (size_t j = 0; j < search[l - 1].size(); ++j) {
              double dist = std::fabs(psi - search[l - 1][j]);
              if (l == 1) dist = std::min(dist, two_pi - dist);  // on the circle
              if (dist < best_dist) best_dist = dist, best = static_cast<int>(j);
            }
            codes[l - 1].push_back(best);
          }
          radii.push_back(std::move(up));
        }
        // Top-down from the fp16 radii and the codes' angles.
        std::vector<double> node(radii.back().size());
        for (size_t i = 0; i < node.size(); ++i) node[i] = ref::round_f16_sat(static_cast<float>(radii.back()[i]));
        for (int l = L; l >= 1; --l) {
          std::vector<double> child(2 * node.size());
          for (size_t i = 0; i < node.size(); ++i) {
            const double psi = stored[l - 1][static_cast<size_t>(codes[l - 1][i])];
            child[2 * i] = node[i] * std::cos(psi);
            child[2 * i + 1] = node[i] * std::sin(psi);
          }
          node = std::move(child);
        }
        std::vector<double> xh(d, 0.0);  // x̂ = Πᵀ ŷ, the padded coordinates dropped: Σ_i ŷ_i·Π_i·, i ascending
        for (int i = 0; i < dp; ++i)
          for (int j = 0; j < d; ++j) xh[j] += P[static_cast<size_t>(i) * dp + j] * node[i];
        for (int j = 0; j < d; ++j) Xh[t * d + j] = static_cast<float>(xh[j]);
      }
    }
  // Byte formulas: ceil(Σ_ℓ (dp/2^ℓ)·b_ℓ / 8) code bytes and dp/2^L binary16 radii per row; an 8-byte seed per
  // (KV head, part); 4 bytes per codebook angle, once per layer.
  uint64_t code_bits = 0;
  for (int l = 1; l <= L; ++l) code_bits += static_cast<uint64_t>(dp >> l) * p.bits[l - 1];
  const uint64_t row = (code_bits + 7) / 8, nr = static_cast<uint64_t>(dp >> L);
  const uint64_t HC = static_cast<uint64_t>(H) * static_cast<uint64_t>(C);
  StorageList st(H, 2.0 * static_cast<double>(row + 2 * nr));
  for (const char* part : {"k", "v"}) {
    const std::string pre(part);
    st.add(pre + ".angles", StorageKind::kCompressed, HC * row, C)
        .add(pre + ".radii", StorageKind::kCompressed, HC * nr * 2, C)
        .add(pre + ".rotation_seed", StorageKind::kFixed, 8 * static_cast<uint64_t>(H), 0);
  }
  st.add("codebook", StorageKind::kFixed, 4 * codebook_entries, 0);
  return ref::dense_layer(kv, std::move(k_hat), std::move(v_hat), ctx, st.get());
}

}  // namespace kvb::codecs
