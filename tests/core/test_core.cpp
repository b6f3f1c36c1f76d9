// Core: parameter validation, budget resolution, RNG determinism and the shared online softmax.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kvb/core/attn_math.h"
#include "kvb/core/error.h"
#include "kvb/core/hash.h"
#include "kvb/core/registry.h"
#include "kvb/core/rng.h"

namespace {

using kvb::Json;
using kvb::ParamSpec;

std::vector<ParamSpec> specs() {
  return {ParamSpec::Int("n", 4, 1, 8, "an int"), ParamSpec::Float("x", 0.5, 0.0, 1.0, "a float"),
          ParamSpec::Bool("flag", false, "a bool"), ParamSpec::Choice("mode", "a", {"a", "b"}, "a choice")};
}

TEST(Params, DefaultsFilled) {
  const Json r = kvb::resolve_params(specs(), Json::object(), "p");
  EXPECT_EQ(r, Json::parse(R"({"n": 4, "x": 0.5, "flag": false, "mode": "a"})"));
  EXPECT_EQ(kvb::resolve_params(specs(), nullptr, "p"), r);
}

TEST(Params, AcceptsIntegralFloatsForInts) {
  const Json r = kvb::resolve_params(specs(), Json::parse(R"({"n": 3.0})"), "p");
  EXPECT_TRUE(r["n"].is_number_integer());
  EXPECT_EQ(r["n"], 3);
}

TEST(Params, Rejections) {
  const std::vector<std::pair<const char*, const char*>> cases = {
      {R"({"m": 1})", "unknown parameter \"m\"; allowed: n, x, flag, mode"},
      {R"({"n": 9})", "p.n: expected an integer in [1, 8], found 9"},
      {R"({"n": 2.5})", "p.n"},
      {R"({"n": "2"})", "string"},
      {R"({"n": true})", "boolean"},
      {R"({"x": 1.5})", "p.x"},
      {R"({"flag": 1})", "p.flag: expected true or false"},
      {R"({"mode": "c"})", "p.mode: expected one of: a, b"},
      {R"([1])", "expected an object"},
  };
  for (const auto& [given, needle] : cases) {
    SCOPED_TRACE(given);
    try {
      kvb::resolve_params(specs(), Json::parse(given), "p");
      FAIL() << "no error";
    } catch (const kvb::UsageError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  }
}

kvb::CodecEntry fake_entry() {
  kvb::CodecEntry e;
  e.info.name = "fake";
  e.info.params = {ParamSpec::Int("n", 4, 1, 8, "bits"), ParamSpec::Int("g", 32, 1, 256, "group")};
  e.candidates = [](int) {
    return std::vector<kvb::Candidate>{{Json{{"n", 2}, {"g", 32}}, 3.0},
                                       {Json{{"n", 3}, {"g", 128}}, 3.25},
                                       {Json{{"n", 2}, {"g", 16}}, 4.0},  // paper default of the 4.0 tie
                                       {Json{{"n", 3}, {"g", 32}}, 4.0},
                                       {Json{{"n", 4}, {"g", 32}}, 5.0}};
  };
  e.label = [](const Json& p) { return "fake" + p["n"].dump(); };
  e.make_cpu = e.make_ref = [](const Json&, const kvb::ModelShape&) -> std::unique_ptr<kvb::Codec> { return nullptr; };
  return e;
}

TEST(Budget, LargestNotAboveTarget) {
  const auto e = fake_entry();
  auto r = kvb::resolve_budget(e, 3.2, Json::object(), 128, "c");
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.params["n"], 2);
  EXPECT_DOUBLE_EQ(r.candidate_bits, 3.0);
  r = kvb::resolve_budget(e, 4.5, Json::object(), 128, "c");
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.params["g"], 16);  // tie at 4.0: the first listed wins
  r = kvb::resolve_budget(e, 100, Json::object(), 128, "c");
  EXPECT_DOUBLE_EQ(r.candidate_bits, 5.0);
}

TEST(Budget, NothingFitsGivesReason) {
  const auto r = kvb::resolve_budget(fake_entry(), 2.0, Json::object(), 128, "c");
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.reason.find("smallest is 3"), std::string::npos) << r.reason;
}

TEST(Budget, ExplicitParamsOverride) {
  const auto r = kvb::resolve_budget(fake_entry(), 5.0, Json{{"g", 64}}, 128, "c");
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.params["n"], 4);
  EXPECT_EQ(r.params["g"], 64);
}

TEST(Budget, KindsConvertToBits) {
  // 160 bytes per token per KV head at head_dim 128 = 8*160/256 = 5 bits; ratio 4 = 4 bits.
  EXPECT_DOUBLE_EQ((kvb::Budget{kvb::Budget::Kind::kBytesPerToken, 160}.target_bits(128)), 5.0);
  EXPECT_DOUBLE_EQ((kvb::Budget{kvb::Budget::Kind::kRatio, 4}.target_bits(128)), 4.0);
  EXPECT_DOUBLE_EQ((kvb::Budget{kvb::Budget::Kind::kBits, 3}.target_bits(64)), 3.0);
}

TEST(Registry, UnknownCodecListsNames) {
  try {
    kvb::registry().at("nope");
    FAIL();
  } catch (const kvb::UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("registered codecs"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("fp16"), std::string::npos);
  }
}

TEST(Registry, EveryEntryDescribes) {
  for (const auto& e : kvb::registry().all()) {
    SCOPED_TRACE(e.info.name);
    const Json d = kvb::describe(e, 128);
    EXPECT_FALSE(d["budget_grid"]["candidates"].empty());
    for (const auto& [name, p] : e.info.presets) EXPECT_NO_THROW(kvb::resolve_preset(e, name, Json::object(), "t"));
  }
}

TEST(Rng, DeterministicAndKeyed) {
  kvb::Rng a(42), b(42), c(43);
  for (int i = 0; i < 100; ++i) {
    const auto x = a.next_u64();
    EXPECT_EQ(x, b.next_u64());
    EXPECT_NE(x, c.next_u64());
  }
  EXPECT_EQ(kvb::derive_seed(1, {2, 3}), kvb::derive_seed(1, {2, 3}));
  EXPECT_NE(kvb::derive_seed(1, {2, 3}), kvb::derive_seed(1, {3, 2}));
  // Uniform in [0,1): mean near 1/2 (std error 0.29/sqrt(1e5) ~ 1e-3; 5e-3 is > 5 sigma).
  kvb::Rng r(7);
  double s = 0;
  for (int i = 0; i < 100000; ++i) s += r.uniform();
  EXPECT_NEAR(s / 100000, 0.5, 5e-3);
}

TEST(OnlineSoftmax, MatchesTwoPass) {
  kvb::Rng rng(5);
  for (int n : {1, 2, 7, 100}) {
    SCOPED_TRACE(n);
    std::vector<float> s(n), v(n);
    for (int i = 0; i < n; ++i) {
      s[i] = static_cast<float>(rng.normal() * 10);
      v[i] = static_cast<float>(rng.normal());
    }
    kvb::OnlineSoftmax os;
    float acc = 0;
    for (int i = 0; i < n; ++i) {
      float rescale;
      const float w = os.push(s[i], &rescale);
      acc = acc * rescale + w * v[i];
    }
    double m = -1e300, z = 0, ref = 0;
    for (float x : s) m = std::max(m, static_cast<double>(x));
    for (int i = 0; i < n; ++i) z += std::exp(s[i] - m);
    for (int i = 0; i < n; ++i) ref += std::exp(s[i] - m) / z * v[i];
    // float32 accumulation over <= 100 terms of |v| ~ 3: 1e-5 relative is ~100 ulp of slack.
    EXPECT_NEAR(acc / os.l, ref, 1e-5 * (1 + std::fabs(ref)));
  }
}

TEST(Softcap, Bounded) {
  EXPECT_FLOAT_EQ(kvb::softcap_f(3.f, 0.f), 3.f);
  EXPECT_NEAR(kvb::softcap_f(1000.f, 30.f), 30.f, 1e-4);
  EXPECT_NEAR(kvb::softcap_f(0.3f, 30.f), 0.3f, 1e-4);
}

// The published FNV-1a 64-bit test vectors, and the word-at-a-time variant over float bit patterns (cell
// seeds derive from fnv1a(label): these values reach results).
TEST(Hash, Fnv1a) {
  EXPECT_EQ(kvb::fnv1a(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(kvb::fnv1a("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(kvb::fnv1a("foobar"), 0x85944171f73967e8ull);
  EXPECT_EQ(kvb::fnv1a("bar", kvb::fnv1a("foo")), kvb::fnv1a("foobar"));
  const float x[2] = {1.0f, -2.0f};  // bit patterns 0x3f800000, 0xc0000000
  EXPECT_EQ(kvb::fnv1a_floats(x, 2), kvb::fnv1a_mix(kvb::fnv1a_mix(kvb::kFnvOffset, 0x3f800000u), 0xc0000000u));
}

// A ParamTable binds each spec to its field: specs in declaration order, from_json and to_json inverse to
// each other, and a choice mapping that misses a choice is refused where it is declared.
TEST(Params, TableBindsSpecsToFields) {
  enum class Mode { kA, kB };
  struct P {
    int n = 0;
    double x = 0;
    bool flag = false;
    Mode mode = Mode::kA;
  };
  const kvb::ParamTable<P> t({kvb::bind(specs()[0], &P::n), kvb::bind(specs()[1], &P::x),
                              kvb::bind(specs()[2], &P::flag),
                              kvb::bind_choice(specs()[3], &P::mode, {{"a", Mode::kA}, {"b", Mode::kB}})});
  ASSERT_EQ(t.specs().size(), 4u);
  EXPECT_EQ(t.specs()[3].name, "mode");
  const Json r = kvb::resolve_params(t.specs(), Json::parse(R"({"n": 7, "flag": true, "mode": "b"})"), "p");
  const P p = t.from_json(r);
  EXPECT_EQ(p.n, 7);
  EXPECT_EQ(p.x, 0.5);
  EXPECT_TRUE(p.flag);
  EXPECT_EQ(p.mode, Mode::kB);
  EXPECT_EQ(t.to_json(p), r);
  EXPECT_THROW(kvb::bind_choice(specs()[3], &P::mode, {{"a", Mode::kA}}), std::logic_error);
}

}  // namespace
