#include <fmt/format.h>

#include "codecs/common/baseline.h"
#include "codecs/polar/polar_codec.h"
#include "kvb/core/error.h"

namespace kvb::codecs {
namespace {

std::string join_bits(const std::vector<int>& bits, const char* sep) {
  std::string s;
  for (size_t i = 0; i < bits.size(); ++i) s += (i ? sep : "") + std::to_string(bits[i]);
  return s;
}

/// "4,2" -> per-level bits for `levels` levels: level ℓ takes the ℓ-th value, the last value repeating for the
/// remaining levels ("4,2" at L = 4 is 4,2,2,2). Separators ',' or '/'. UsageError on anything else.
std::vector<int> parse_bits(const std::string& text, int levels) {
  std::vector<int> out;
  auto bad = [&](const std::string& why) {
    return UsageError(fmt::format(
        "polarquant.params.bits \"{}\": {} (expected up to levels = {} angle bit widths in [1, {}] separated by "
        "commas, level 1 first, e.g. \"4,2,2,2\"; the last one repeats for the remaining levels)",
        text, why, levels, polar::kMaxBits));
  };
  size_t i = 0;
  while (i <= text.size()) {
    size_t j = i;
    while (j < text.size() && text[j] != ',' && text[j] != '/') ++j;
    std::string tok = text.substr(i, j - i);
    while (!tok.empty() && tok.front() == ' ') tok.erase(tok.begin());
    while (!tok.empty() && tok.back() == ' ') tok.pop_back();
    if (tok.empty() || tok.size() > 1 || tok[0] < '1' || tok[0] > '0' + polar::kMaxBits)
      throw bad(fmt::format("\"{}\" is not a bit width in [1, {}]", tok, polar::kMaxBits));
    out.push_back(tok[0] - '0');
    i = j + 1;
  }
  if (static_cast<int>(out.size()) > levels)
    throw bad(fmt::format("{} widths for {} levels", out.size(), levels));
  while (static_cast<int>(out.size()) < levels) out.push_back(out.back());
  return out;
}

/// The budget grid: (levels, bits) choices, the paper's first; listed at a head_dim only where 2^L divides it
/// (no padding), so an odd head_dim has none (explicit parameters and the preset still run, padded).
struct GridPoint {
  int levels;
  std::vector<int> bits;
};
const std::vector<GridPoint>& grid() {
  static const std::vector<GridPoint> g{
      {4, {4, 2, 2, 2}},        // the paper's KV configuration: 3.875 bits at d = 128
      {6, {2, 2, 1, 1, 1, 1}},  // ~2 bits
      {5, {3, 2, 2, 2, 2}},     // ~2.94 bits
      {4, {5, 3, 3, 3}},        // ~4.81 bits
      {3, {4, 2, 2}},           // 4.75 bits (fits head_dim 8)
  };
  return g;
}

}  // namespace

void PolarParams::check(int head_dim) const {
  KVB_CHECK(levels >= 1 && levels <= polar::kMaxLevels && static_cast<int>(bits.size()) == levels, UsageError,
            "polarquant: levels {} with {} angle bit widths", levels, bits.size());
  KVB_CHECK(head_dim >= 1, Unsupported, "polarquant: head_dim {} < 1", head_dim);
}

std::string PolarParams::label() const { return fmt::format("polarquant-L{}-b{}", levels, join_bits(bits, "")); }

const ParamTable<PolarParams>& polar_params() {
  using P = PolarParams;
  static const ParamTable<P> table({
      bind(ParamSpec::Int("levels", 4, 1, polar::kMaxLevels,
                          "polar transform levels L: dp − dp/2^L angles and dp/2^L fp16 radii per row (dp = head_dim "
                          "zero-padded to a multiple of 2^L)"),
           &P::levels),
      ParamBinding<P>{
          ParamSpec::Choice("bits", "4,2", {},
                            "angle bits per level, level 1 first, comma separated, each in [1, 8]; the last repeats "
                            "for the remaining levels (\"4,2\" = 4,2,2,2 at L = 4, the paper's)"),
          [](P& p, const Json& v) { p.bits = parse_bits(v.get<std::string>(), p.levels); },  // levels is read first
          [](const P& p) { return Json(join_bits(p.bits, ",")); }},
  });
  return table;
}

CodecEntry polarquant_entry() {
  CodecEntry e;
  e.info.name = "polarquant";
  e.info.family = "polar_quantization";
  e.info.summary =
      "PolarQuant: keys and values preconditioned by a seeded Haar rotation, recursively polar-transformed over L "
      "levels, angles coded with per-level codebooks from the levels' known densities (offline Lloyd–Max), the "
      "remaining radii fp16; scored from the codes in the rotated domain";
  e.info.paper = "PolarQuant, arXiv 2502.02617";
  e.info.budget_rule =
      "b_eff = 8·(ceil(Σ_ℓ (dp/2^ℓ)·b_ℓ / 8) + 2·dp/2^L) / head_dim (packed angle codes of one row plus its fp16 "
      "radii, the same for K and V; dp = head_dim here, since candidates are listed only where 2^L divides "
      "head_dim); candidates (L; bits) = (4; 4,2,2,2) [the paper's, 3.875 at head_dim 128], (6; 2,2,1,1,1,1), "
      "(5; 3,2,2,2,2), (4; 5,3,3,3), (3; 4,2,2). Seeds and codebooks are fixed bytes (bits_with_fixed).";
  e.info.params = polar_params().specs();
  e.info.presets = {{"paper", Json{{"levels", 4}, {"bits", "4,2,2,2"}}}};
  e.info.notes =
      "the paper's KV configuration (preset paper = the defaults): L = 4, angle bits 4/2/2/2, d/16 fp16 radii: "
      "64·4 + 32·2 + 16·2 + 8·2 + 8·16 = 496 bits per row = 3.875 bits per element at head_dim 128, as computed "
      "from the stored layout. Keys and values both use the scheme (the paper quantizes keys; the spec allows the "
      "same scheme or KIVI for values: kvbench uses the same). Π is a Haar-random orthogonal matrix (QR with the "
      "sign correction) per (layer, KV head, K or V), stored as its 8-byte seed; the codebooks (level 1 the "
      "uniform grid of 2^b bin centers on [0, 2π), used directly since the angle is circular; level ℓ >= 2 "
      "Lloyd–Max for the density ∝ sin^(2^(ℓ−1)−1)(2ψ) on [0, π/2]) are computed by the code and stored once "
      "per layer as float32 (4·Σ 2^b_ℓ bytes, 112 for 4/2/2/2). A head_dim not divisible by 2^L is zero-padded "
      "to the next multiple before the rotation (every padded coordinate stored and counted); budget candidates "
      "are listed only where 2^L divides head_dim. Encode in float64 (angle -> nearest codebook level); attend "
      "decodes each row top-down in the rotated domain, scores with Πq and un-rotates the output once per query. "
      "Angle codes are decided from each node's pair by exact sign tests against the boundaries (no atan2), so "
      "the CUDA backend stores the CPU's bytes.";
  e.candidates = [](int d) {
    std::vector<Candidate> out;
    for (const GridPoint& g : grid()) {
      if (d % (1 << g.levels) != 0) continue;
      const polar::Layout lay = polar::make_layout(d, g.levels, g.bits);
      out.push_back({Json{{"levels", g.levels}, {"bits", join_bits(g.bits, ",")}},
                     8.0 * lay.part_bytes() / static_cast<double>(d)});
    }
    return out;
  };
  e.label = codec_label(polar_params(), "polarquant");
  e.make_cpu = codec_factory(polar_params(), "polarquant", [](PolarParams p) {
    return std::make_unique<FnCodec<PolarParams>>(std::move(p), polar_encode_cpu, "cpu");
  });
  e.make_ref = codec_factory(polar_params(), "polarquant", [](PolarParams p) {
    return std::make_unique<FnCodec<PolarParams>>(std::move(p), polar_encode_ref, "ref");
  });
#ifdef KVB_WITH_CUDA
  e.make_cuda = fn_factory(polar_params(), "polarquant", polar_encode_cuda, "cuda");
#endif
  // Selftest (CPU vs CUDA, bytes exact): the paper's defaults (L = 4: no padding at the selftest's head_dims)
  // and L = 6 with 1-bit levels (head_dim 96 padded to 128).
  e.selftest_variants = {Json::object(), Json{{"levels", 6}, {"bits", "2,2,1,1,1,1"}}};
  return e;
}

}  // namespace kvb::codecs
