// Registry-wide tests: every registered codec, every budget candidate and preset, on odd shapes —
// the CPU implementation against the codec's naive reference (docs/design.md §3, §6).
#include <gtest/gtest.h>

#include <limits>
#include <map>

#include "codec_test_util.h"
#include "kvb/core/error.h"
#include "kvb/core/registry.h"

namespace kvb::test {
namespace {

// ---- tolerances (cpu vs ref) ------------------------------------------------------------------------
//
// For the baseline codecs cpu and ref hold the SAME stored values: both quantize with the identical
// float32 definition (fp16-rounded scale/min, floor(y + 0.5)), so every code matches exactly and the two
// differ only by float32 (cpu) versus float64 (ref) arithmetic:
//  * a logit is a float32 dot product of d terms: |ŝ_cpu − ŝ_ref| <= γ·softmax_scale·Σ_j |q_j|·|k̂_j| with
//    γ <= (d + score_extra_ulps)·u, score_extra_ulps = 16 (Higham's bound for recursive summation, u = 2^-24; the extra ulps cover
//    the dequantization and scale roundings). We bound Σ|q_j||k̂_j| by ‖q‖₁·max|k̂| and max|k̂| by
//    1.01·max|K| + 1e-3 (dequantized values lie inside their group's [min, max] up to fp16 rounding).
//  * the output then moves through the softmax by ~2·max|δŝ| (relative), plus float32 accumulation of the
//    weighted values over C tokens, which behaves like a random walk of ~sqrt(C)·u per output element
//    (the softmax normalizer itself is summed in double). At C = 4099 that is a few 1e-6; the worst
//    observed rel_l2 over all baseline configurations here is 4.9e-6 (C = 4099).
//    attend_rel_l2 = 1e-4 leaves >10x margin and still catches code mismatches and indexing bugs: making the
//    reference round with floor(y + 0.45) instead of floor(y + 0.5) (so ~5% of codes move by one step)
//    fails thousands of these checks with rel_l2 up to 13.
//  * cosine: 1 − cos ≈ rel_l2²/2, so attend_cos_gap = 1e-6 is implied by and consistent with rel_l2 <= 1e-4
//    (kept as its own check because it is the user-facing fidelity metric).
constexpr double kU = 0x1p-24;

struct Tolerance {
  double score_extra_ulps;  ///< added to d in the logit bound (d + extra)·u·scale·‖q‖₁·max|k̂|
  double attend_rel_l2;     ///< ‖ô_cpu − ô_ref‖ / ‖ô_ref‖
  double attend_cos_gap;    ///< 1 − cos(ô_cpu, ô_ref)
};

/// The baselines (fp16, fp8, int, kivi): same codes, float32 vs float64 only (see above).
constexpr Tolerance kSameCodesF32{16, 1e-4, 1e-6};

/// kvcar (KV-CAR-proxy): cpu and ref run the same trained weights (one deterministic fit), but the cpu
/// path folds BatchNorm and the standardization into float32 weights and encodes/decodes in float32, while
/// the reference applies them unfolded in float64. Two effects:
///  * a decoded element is a float32 sum over h hidden units of terms that are themselves sums over d_lat
///    latents, and those terms can exceed |k̂| many times (the MLP cancels): ~(d_lat + h)·u·Σ|w·a|, not
///    d·u·|k̂|. Alone this reached 73x the baseline bound ((8 + 16)·u at head_dim 8), ~1750 ulps;
///  * a latent within a float32 error of an fp16 rounding boundary or an int8 rounding tie is stored one
///    step apart (expected a few times among the 16k int8 codes of a C = 4099 cache); one int8 step of one
///    latent moved one logit by 0.042 (ratio 1/4, head_dim 8), ~10.5k ulps of this bound's scale.
/// score_extra_ulps = 65536 covers both with ~6x margin and still bounds the logit error by ~0.4% of
/// softmax_scale·‖q‖₁·max|K|: a wrong decoder (BatchNorm without eps, a head slice off by one) errs by
/// tens of percent. attend_rel_l2: worst observed 1.1e-4 (C = 4099), so 1e-3 keeps ~10x margin; such a
/// bug gives rel_l2 > 1e-2. cos gap 1e-6 is implied (1 − cos ≈ rel_l2²/2 = 5e-7).
constexpr Tolerance kKvcarF32Decoder{65536, 1e-3, 1e-6};

/// Per-codec tolerances. A codec whose CPU path legitimately differs more from its reference (random
/// projections in float, trained weights, ...) adds its own row here with its justification; until then
/// it is held to the same-codes tolerance.
Tolerance tolerance_for(const std::string& codec) {
  static const std::map<std::string, Tolerance> table{
      {"fp16", kSameCodesF32}, {"fp8", kSameCodesF32}, {"int", kSameCodesF32}, {"kivi", kSameCodesF32},
      {"kvcar", kKvcarF32Decoder}};
  const auto it = table.find(codec);
  return it == table.end() ? kSameCodesF32 : it->second;
}

struct Case {
  int64_t C;
  int d;
  int group;  // query heads per KV head (1 = MHA, 4 = GQA 4:1)
};

std::vector<Case> all_cases() {
  std::vector<Case> out;
  for (int64_t C : {1, 7, 127})
    for (int d : {8, 64, 96, 128, 256})
      for (int group : {1, 4}) out.push_back({C, d, group});
  // C = 4099 (more than one block of every codec's blocking, KIVI's residual window full, a partial last
  // block): the real head_dim with GQA, a non-power-of-two head_dim (Hadamard padding) and the widest one.
  // Every (d, group) runs at C <= 127. With all ten (d, group) at C = 4099 the 21 instances of this test took
  // 442 s summed on the 2-core CI machine; with these three, 279 s.
  out.push_back({4099, 128, 4});
  out.push_back({4099, 96, 1});
  out.push_back({4099, 256, 1});
  // Extreme head dims (docs/errors.md §4: head_dim 1 or 1024 must work): candidates fall back to groups of
  // head_dim (int) and gcd(head_dim, 32) (kivi); C chosen to populate both KIVI regions.
  out.push_back({130, 1, 1});
  out.push_back({300, 7, 4});
  out.push_back({129, 1024, 1});
  return out;
}

/// Every parameter object the test runs for an entry at head_dim d: defaults, each budget candidate,
/// each preset.
std::vector<std::pair<std::string, Json>> configs(const CodecEntry& e, int d) {
  std::vector<std::pair<std::string, Json>> out{{"defaults", Json::object()}};
  int i = 0;
  for (const auto& c : e.candidates(d)) out.push_back({fmt::format("candidate[{}]", i++), c.params});
  for (const auto& [name, p] : e.info.presets) out.push_back({"preset " + name, p});
  return out;
}

class RegistryCodecs : public ::testing::TestWithParam<std::string> {};

TEST_P(RegistryCodecs, CpuMatchesRefOnOddShapes) {
  const CodecEntry& e = registry().at(GetParam());
  const Tolerance tl = tolerance_for(e.info.name);
  double worst_rel = 0, worst_score = 0;
  int ran = 0, unsupported = 0;
  FitStore fits;
  for (const Case& cs : all_cases()) {
    SynthOptions o;
    o.tokens = cs.C;
    o.head_dim = cs.d;
    o.group = cs.group;
    o.queries = cs.C > 1000 ? 1 : 2;
    o.seed = 1000 + cs.C * 7 + cs.d * 3 + cs.group;
    o.softcap = cs.group == 4 ? 30.f : 0.f;  // exercise the softcap path on the GQA cases
    const SynthLayer L = make_layer(o);
    const int H = L.shape.n_heads, d = cs.d;
    for (const auto& [cfg_name, cfg] : configs(e, d)) {
      // turboquant's and polarquant's references cost ~4–8·d² float64 operations per vector (dense
      // rotations): at C = 4099 their defaults and presets only (the other bit widths run the same code and
      // are covered at C <= 127).
      if ((e.info.name == "turboquant" || e.info.name == "polarquant") && cs.C > 1000 &&
          cfg_name.rfind("candidate", 0) == 0)
        continue;
      const Json params = resolve_params(e.info.params, cfg, e.info.name);
      SCOPED_TRACE(fmt::format("codec {} ({}: {}) label {} on {}", e.info.name, cfg_name, params.dump(),
                               e.label(params), L.describe()));
      std::unique_ptr<Codec> cpu, ref;
      bool cpu_uns = false, ref_uns = false;
      try {
        cpu = e.make_cpu(params, L.shape);
      } catch (const Unsupported&) {
        cpu_uns = true;
      }
      try {
        ref = e.make_ref(params, L.shape);
      } catch (const Unsupported&) {
        ref_uns = true;
      }
      ASSERT_EQ(cpu_uns, ref_uns) << "cpu and ref disagree on whether the configuration is supported";
      if (cpu_uns) {
        // Defaults and paper presets may not fit a small head_dim; budget candidates adapt and must.
        EXPECT_EQ(cfg_name.rfind("candidate", 0), std::string::npos)
            << "a budget candidate must fit the head_dim it was listed for";
        ++unsupported;
        continue;
      }
      if (e.info.trainable) {
        SynthOptions co = o;
        co.seed += 99991;  // calibration data from another "sequence"
        // This test compares cpu with ref from the same fitted state; the calibration size only sets the
        // fit time (lookat's k-means costs tokens x 256 x head_dim x 25 MACs per KV head), so cap it.
        co.tokens = std::min<int64_t>(co.tokens, 512);
        const SynthLayer calib = make_layer(co);
        // The reference encodes from the CPU codec's trained state (the implementations differ in
        // inference, not in training); configurations that train alike share one fit.
        fits.fit(*cpu, e.info.name, fmt::format("{} {}", co.seed, calib.describe()), 0, {&calib.kv}, calib.ctx());
        fit_like(*ref, *cpu, 0, {&calib.kv}, calib.ctx());
      }
      const auto ec = cpu->encode(0, L.kv, nullptr, L.ctx());
      const auto er = ref->encode(0, L.kv, nullptr, L.ctx());
      ASSERT_EQ(ec->tokens(), cs.C);

      // Storage: the CPU's measured buffers against the reference's byte formulas.
      const Storage sc = ec->storage(), sr = er->storage();
      EXPECT_EQ(sc.kv_heads, L.shape.n_kv_heads);
      ASSERT_EQ(sc.items.size(), sr.items.size());
      for (size_t i = 0; i < sc.items.size(); ++i) {
        SCOPED_TRACE("storage item " + sc.items[i].name);
        EXPECT_EQ(sc.items[i].name, sr.items[i].name);
        EXPECT_EQ(sc.items[i].kind, sr.items[i].kind);
        EXPECT_EQ(sc.items[i].bytes, sr.items[i].bytes);
        EXPECT_EQ(sc.items[i].tokens, sr.items[i].tokens);
      }
      EXPECT_DOUBLE_EQ(sc.nominal_bytes_per_token, sr.nominal_bytes_per_token);
      // Measured bytes per token (docs/metrics.md §6) equals the nominal formula when every region has tokens.
      double bpt = 0;
      bool every_region = true;
      for (const auto& it : sc.items) {
        if (it.kind != StorageKind::kCompressed) continue;
        if (it.tokens <= 0) {
          every_region = false;
          EXPECT_EQ(it.bytes, 0u);
          continue;
        }
        bpt += static_cast<double>(it.bytes) / (sc.kv_heads * static_cast<double>(it.tokens));
      }
      if (every_region && !e.info.selects_tokens) {
        EXPECT_NEAR(bpt, sc.nominal_bytes_per_token, 1e-9 * sc.nominal_bytes_per_token);
      } else if (every_region) {
        // Token selection keeps ⌊n/2^T⌋ of n tokens: the measured cost per token sits at most one kept
        // row's share below the nominal 2^-T rate, never above it.
        int64_t n = 0;
        for (const auto& it : sc.items)
          if (it.kind == StorageKind::kCompressed) n = std::max(n, it.tokens);
        // Eviction keeps ⌊keep·C⌋ rows but at least one: at tiny C that one row costs more than the nominal rate.
        const double floor_row = e.info.family == "token_eviction" ? 4.0 * d / static_cast<double>(n) : 0.0;
        EXPECT_LE(bpt, std::max(sc.nominal_bytes_per_token, floor_row) * (1 + 1e-9));
        EXPECT_GE(bpt, sc.nominal_bytes_per_token - 4.0 * d / static_cast<double>(n) - 1e-9);
      }

      // Scores and outputs for queries of every query head (so GQA maps several heads to one KV head).
      Scratch scratch_c, scratch_r;
      std::vector<float> s_c(cs.C), s_r(cs.C), o_c(d), o_r(d);
      for (int h = 0; h < H; ++h)
        for (int qi = 0; qi < L.nq; ++qi) {
          SCOPED_TRACE(fmt::format("query head {} (KV head {}), query {}", h, h / cs.group, qi));
          const int g = h / cs.group;
          const float* q = L.query(h, qi);
          const bool has_c = ec->scores(g, q, s_c.data(), scratch_c);
          const bool has_r = er->scores(g, q, s_r.data(), scratch_r);
          ASSERT_EQ(has_c, has_r);
          ASSERT_EQ(has_c, e.info.defines_scores);
          if (has_c) {
            ASSERT_TRUE(all_finite(s_c.data(), cs.C));
            double q1 = 0, kmax = 0;
            for (int j = 0; j < d; ++j) q1 += std::fabs(q[j]);
            const float* K = L.kv.k_head(g);
            for (int64_t i = 0; i < cs.C * d; ++i) kmax = std::max(kmax, static_cast<double>(std::fabs(K[i])));
            const double tol =
                (d + tl.score_extra_ulps) * kU * L.attn.softmax_scale * q1 * (1.01 * kmax + 1e-3);
            double err = 0;
            for (int64_t t = 0; t < cs.C; ++t) err = std::max(err, static_cast<double>(std::fabs(s_c[t] - s_r[t])));
            EXPECT_LE(err, tol) << "max |ŝ_cpu − ŝ_ref| over tokens";
            worst_score = std::max(worst_score, err / tol);
          }
          ec->attend(g, q, o_c.data(), scratch_c);
          er->attend(g, q, o_r.data(), scratch_r);
          ASSERT_TRUE(all_finite(o_c.data(), d));
          const double rel = rel_l2(o_c.data(), o_r.data(), d);
          EXPECT_LE(rel, tl.attend_rel_l2);
          EXPECT_GE(cosine(o_c.data(), o_r.data(), d), 1.0 - tl.attend_cos_gap);
          worst_rel = std::max(worst_rel, rel);
        }
      ++ran;
    }
  }
  EXPECT_GT(ran, 0);
  std::printf("[ %s ] %d configurations ran, %d unsupported defaults/presets skipped; worst attend rel_l2 %.3g, "
              "worst score error / bound %.3g\n",
              e.info.name.c_str(), ran, unsupported, worst_rel, worst_score);
}

std::vector<std::string> registered_names() {
  std::vector<std::string> out;
  for (const auto& e : registry().all()) out.push_back(e.info.name);
  return out;
}

INSTANTIATE_TEST_SUITE_P(AllCodecs, RegistryCodecs, ::testing::ValuesIn(registered_names()),
                         [](const auto& info) { return info.param; });

TEST(RegistryCodecs, RegisterAllListsTheBaselinesOnce) {
  CodecRegistry r;
  register_all_codecs(r);  // the one list (codecs/register_all.cpp); add() asserts unique names
  for (const char* name : {"fp16", "fp8", "int", "kivi"}) EXPECT_NE(r.find(name), nullptr) << name;
  EXPECT_EQ(r.all().size(), registry().all().size());
}

TEST(RegistryCodecs, BaselinesAreRegisteredWithInfo) {
  for (const char* name : {"fp16", "fp8", "int", "kivi"}) {
    SCOPED_TRACE(name);
    const CodecEntry* e = registry().find(name);
    ASSERT_NE(e, nullptr);
    EXPECT_FALSE(e->info.summary.empty());
    EXPECT_FALSE(e->info.paper.empty());
    EXPECT_FALSE(e->info.budget_rule.empty());
    EXPECT_TRUE(e->info.defines_scores);
    EXPECT_FALSE(e->info.trainable);
#ifdef KVB_WITH_CUDA
    // The CUDA backend of the baselines is built in: the registry lists it because make_cuda is set.
    EXPECT_TRUE(static_cast<bool>(e->make_cuda));
    EXPECT_EQ(e->info.backends, (std::vector<std::string>{"cpu", "cuda"}));
#else
    EXPECT_FALSE(static_cast<bool>(e->make_cuda));
    EXPECT_EQ(e->info.backends, std::vector<std::string>{"cpu"});
#endif
    for (const auto& p : e->info.params) EXPECT_FALSE(p.help.empty()) << p.name;
    EXPECT_NO_THROW(describe(*e, 128));
    EXPECT_NO_THROW(describe(*e, 8));
  }
  EXPECT_EQ(registry().at("kivi").info.paper, "KIVI, arXiv 2402.02750");
}

// ---- impossible combinations: Unsupported from both factories and from encode --------------------------

void expect_unsupported(const std::string& codec, const Json& params, int head_dim) {
  SCOPED_TRACE(fmt::format("{} {} at head_dim {}", codec, params.dump(), head_dim));
  const CodecEntry& e = registry().at(codec);
  const ModelShape shape{1, 2, 2, head_dim};
  EXPECT_THROW(e.make_cpu(params, shape), Unsupported);
  EXPECT_THROW(e.make_ref(params, shape), Unsupported);
  // A codec built for an unknown head_dim must refuse the cache at encode time.
  const auto c = e.make_cpu(params, ModelShape{});
  SynthOptions o;
  o.head_dim = head_dim;
  o.tokens = 300;
  const SynthLayer L = make_layer(o);
  EXPECT_THROW(c->encode(0, L.kv, nullptr, L.ctx()), Unsupported);
}

TEST(RegistryCodecs, ImpossibleCombinationsThrowUnsupported) {
  expect_unsupported("int", Json{{"group_size", 32}}, 8);
  expect_unsupported("int", Json{{"group_size", 48}}, 128);
  expect_unsupported("int", Json{{"group_size", 256}}, 128);
  expect_unsupported("kivi", Json{{"group_size", 32}}, 8);
  expect_unsupported("kivi", Json{{"group_size", 32}, {"residual", 100}}, 128);
  expect_unsupported("kivi", Json{{"group_size", 64}}, 96);
  // The message names both numbers.
  try {
    registry().at("int").make_cpu(Json{{"group_size", 32}}, ModelShape{1, 1, 1, 8});
    FAIL() << "expected Unsupported";
  } catch (const Unsupported& ex) {
    EXPECT_NE(std::string(ex.what()).find("group_size 32"), std::string::npos) << ex.what();
    EXPECT_NE(std::string(ex.what()).find("head_dim 8"), std::string::npos) << ex.what();
  }
  // Out-of-range or unknown parameters are usage errors, not Unsupported.
  EXPECT_THROW(registry().at("int").make_cpu(Json{{"code_bits", 9}}, ModelShape{1, 1, 1, 128}), UsageError);
  EXPECT_THROW(registry().at("kivi").make_cpu(Json{{"bits", 2}}, ModelShape{1, 1, 1, 128}), UsageError);
  EXPECT_THROW(registry().at("fp8").make_cpu(Json{{"format", "e3m4"}}, ModelShape{1, 1, 1, 128}), UsageError);
}

TEST(RegistryCodecs, EmptyOrInconsistentCachesAreDataErrors) {
  const auto c = registry().at("int").make_cpu(Json::object(), ModelShape{1, 1, 1, 64});
  LayerKV kv;
  kv.kv_heads = 1;
  kv.head_dim = 64;
  kv.tokens = 0;
  EXPECT_THROW(c->encode(0, kv, nullptr, CodecContext{}), DataError);
  kv.tokens = 4;
  kv.k.assign(4 * 64, 0.f);
  kv.v.assign(3 * 64, 0.f);
  EXPECT_THROW(c->encode(0, kv, nullptr, CodecContext{}), DataError);
}

// ---- b_eff and budgets ------------------------------------------------------------------------------

/// bits per element measured from storage() at head_dim 128 with every region populated.
double measured_bits(const std::string& codec, const Json& params) {
  const CodecEntry& e = registry().at(codec);
  SynthOptions o;
  o.head_dim = 128;
  o.tokens = 1000;  // kivi R=128: 896 quantized keys, 872 quantized values, both buffers non-empty
  const SynthLayer L = make_layer(o);
  const auto c = e.make_cpu(resolve_params(e.info.params, params, codec), L.shape);
  const Storage st = c->encode(0, L.kv, nullptr, L.ctx())->storage();
  double bpt = 0;
  for (const auto& it : st.items)
    if (it.kind == StorageKind::kCompressed) {
      EXPECT_GT(it.tokens, 0) << it.name;
      bpt += static_cast<double>(it.bytes) / (st.kv_heads * static_cast<double>(it.tokens));
    }
  EXPECT_DOUBLE_EQ(bpt, st.nominal_bytes_per_token);
  return 8.0 * bpt / (2.0 * 128);
}

TEST(RegistryCodecs, EffectiveBitsAtHeadDim128) {
  EXPECT_DOUBLE_EQ(measured_bits("int", Json{{"code_bits", 4}, {"group_size", 32}}), 5.0);
  EXPECT_DOUBLE_EQ(measured_bits("int", Json{{"code_bits", 4}, {"group_size", 128}}), 4.25);
  EXPECT_DOUBLE_EQ(measured_bits("int", Json{{"code_bits", 2}, {"group_size", 32}}), 3.0);
  EXPECT_DOUBLE_EQ(measured_bits("int", Json{{"code_bits", 8}, {"group_size", 32}}), 9.0);
  EXPECT_DOUBLE_EQ(measured_bits("kivi", Json{{"code_bits", 2}}), 3.0);
  EXPECT_DOUBLE_EQ(measured_bits("kivi", Json{{"code_bits", 4}}), 5.0);
  EXPECT_DOUBLE_EQ(measured_bits("fp8", Json::object()), 8.0);
  EXPECT_DOUBLE_EQ(measured_bits("fp8", Json{{"format", "e5m2"}}), 8.0);
  EXPECT_DOUBLE_EQ(measured_bits("fp16", Json::object()), 16.0);
  // Candidate b_eff equals the measured value for every candidate.
  for (const char* codec : {"fp16", "fp8", "int", "kivi"})
    for (const auto& cand : registry().at(codec).candidates(128)) {
      SCOPED_TRACE(fmt::format("{} {}", codec, cand.params.dump()));
      EXPECT_DOUBLE_EQ(measured_bits(codec, cand.params), cand.bits);
    }
}

TEST(RegistryCodecs, BudgetResolution) {
  const CodecEntry& e = registry().at("int");
  const std::map<double, int> want{{3.0, 2}, {5.0, 4}, {9.0, 8}};
  for (const auto& [bits, code_bits] : want) {
    SCOPED_TRACE(fmt::format("int bits={}", bits));
    const BudgetResolution r = resolve_budget(e, bits, Json::object(), 128, "codecs[0]");
    ASSERT_TRUE(r.ok) << r.reason;
    EXPECT_EQ(r.params.at("code_bits"), code_bits);
    EXPECT_EQ(r.params.at("group_size"), 32);
    EXPECT_DOUBLE_EQ(r.candidate_bits, bits);
    EXPECT_EQ(e.label(r.params), fmt::format("int{}-g32", code_bits));
  }
  // int at 4.3 bits: int4-g128 (4.25) beats int3-g32 (4.0).
  {
    const BudgetResolution r = resolve_budget(e, 4.3, Json::object(), 128, "codecs[0]");
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(e.label(r.params), "int4-g128");
  }
  // kivi 3 and 5 bits -> KIVI-2 and KIVI-4 with the paper's G and R.
  const CodecEntry& k = registry().at("kivi");
  for (const auto& [bits, label] : std::map<double, std::string>{{3.0, "kivi2-g32-r128"}, {5.0, "kivi4-g32-r128"}}) {
    const BudgetResolution r = resolve_budget(k, bits, Json::object(), 128, "codecs[1]");
    ASSERT_TRUE(r.ok) << r.reason;
    EXPECT_EQ(k.label(r.params), label);
  }
  // fp8 ties: e4m3 is listed first and wins; fp16 needs 16 bits.
  {
    const BudgetResolution r = resolve_budget(registry().at("fp8"), 8.0, Json::object(), 128, "x");
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.params.at("format"), "e4m3");
    EXPECT_FALSE(resolve_budget(registry().at("fp16"), 8.0, Json::object(), 128, "x").ok);
  }
  // Small head_dim: candidates adapt (int groups of head_dim, kivi G = gcd(head_dim, 32)).
  for (const auto& c : e.candidates(8)) EXPECT_EQ(c.params.at("group_size"), 8);
  for (const auto& c : k.candidates(8)) EXPECT_EQ(c.params.at("group_size"), 8);
  for (const auto& c : k.candidates(80)) EXPECT_EQ(c.params.at("group_size"), 16);
  // Labels and presets.
  EXPECT_EQ(k.label(Json::object()), "kivi2-g32-r128");
  EXPECT_EQ(e.label(Json::object()), "int4-g32");
  EXPECT_EQ(registry().at("fp8").label(Json::object()), "fp8-e4m3");
  EXPECT_EQ(k.label(resolve_preset(k, "paper-4", Json::object(), "x")), "kivi4-g32-r128");
  EXPECT_EQ(k.label(resolve_preset(k, "paper-2", Json::object(), "x")), "kivi2-g32-r128");
}

}  // namespace
}  // namespace kvb::test
