// lookat's CUDA backend against its CPU path through kvbench's selftest harness (both fitted on the same
// calibration cache): stored bytes exact (codes, values, codebooks), storage exact, logits and outputs
// within kSelftestScoreTol / kSelftestAttendTol. Skips without a CUDA build or device. LookatDeviceMath runs
// the kernels' per-element math (pq_math.h, kernels/cuda/layer_view.h) on the host everywhere. The CPU-vs-reference
// selftest of lookat (which exercises the harness's fit of trainable codecs) runs everywhere.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "kernels/cuda/layer_view.h"
#include "codecs/pq/pq_math.h"
#include "kvb/core/attn_math.h"
#include "kvb/core/half.h"
#include "kvb/core/registry.h"
#include "kvb/core/rng.h"
#include "kvb/run/device_api.h"
#include "kvb/bench/selftest.h"

namespace kvb {
namespace {

void expect_pass(const SelftestResult& r, int* ran) {
  if (r.skipped) return;
  ++*ran;
  for (const auto& k : r.checks) EXPECT_TRUE(k.pass) << k.name << " = " << k.value << " > " << k.tol << " " << k.detail;
}

/// The selftest matrix's lookat cases (defaults: m = 4, fp16 values) plus int4 values with m = 8.
std::vector<SelftestCase> lookat_cases(const std::string& device, int64_t max_tokens) {
  std::vector<SelftestCase> out;
  for (const auto& c : selftest_cases(device, false)) {
    if (c.codec != "lookat" || c.tokens > max_tokens) continue;
    out.push_back(c);
    SelftestCase v = c;
    v.params = Json{{"subspaces", 8}, {"values", "int4"}, {"iters", 8}};
    v.seed += 1000;
    out.push_back(v);
  }
  return out;
}

TEST(LookatGpuParity, CudaMatchesCpu) {
  const CodecEntry& e = registry().at("lookat");
  if (!e.make_cuda) GTEST_SKIP() << "this build has no CUDA backend (nvcc not found or KVB_ENABLE_CUDA=OFF)";
  std::string err;
  if (cuda::device_count(&err) == 0) GTEST_SKIP() << "no usable CUDA device: " << err;
  int ran = 0;
  for (const auto& c : lookat_cases("cuda", 1 << 30)) {
    SCOPED_TRACE(c.describe());
    expect_pass(run_selftest_case(c, "cuda"), &ran);
  }
  EXPECT_GT(ran, 10);
}

TEST(LookatGpuParity, CpuSelftestFitsAndMatchesReference) {
  int ran = 0;
  for (const auto& c : lookat_cases("cpu", 129)) {
    SCOPED_TRACE(c.describe());
    expect_pass(run_selftest_case(c, "cpu"), &ran);
  }
  EXPECT_GT(ran, 10);
}

// ---- the kernel's math on the host (runs everywhere) ----
// lookat_split + lookat_merge evaluated on the host over the CPU layer's own buffers, with the device's
// per-element functions (pq_math.h lut_entry / table_sum, kernels/cuda/layer_view.h load() for the values, merge_factors):
// chunks of `chunk` tokens, a max-shifted softmax per chunk, merged. Must equal the CPU attend within the
// selftest tolerances (same stored values, float32 sums in other orders).

LayerKV random_cache(int H, int64_t C, int d, uint64_t seed) {
  Rng r(seed);
  LayerKV kv;
  kv.kv_heads = H, kv.tokens = C, kv.head_dim = d;
  kv.k.resize(static_cast<size_t>(H) * C * d);
  kv.v.resize(kv.k.size());
  for (size_t i = 0; i < kv.k.size(); ++i) {
    const int j = static_cast<int>(i % d);
    kv.k[i] = static_cast<float>(r.normal() * (j % 13 == 5 ? 6.0 : 1.0) + 0.3 * j / d);
    kv.v[i] = static_cast<float>(r.normal());
  }
  return kv;
}

TEST(LookatDeviceMath, ChunkedKernelMathMatchesCpu) {
  const int H = 2, d = 64;
  const int64_t C = 700;
  const LayerKV calib = random_cache(H, 2000, d, 11), kv = random_cache(H, C, d, 12);
  const CodecEntry& e = registry().at("lookat");
  for (const Json& params : {Json{{"subspaces", 8}, {"iters", 6}},
                             Json{{"subspaces", 16}, {"values", "int4"}, {"iters", 6}}}) {
    SCOPED_TRACE(params.dump());
    const Json p = resolve_params(e.info.params, params, "lookat");
    const int m = p.at("subspaces").get<int>(), K = 256, dsub = d / m;
    CodecContext ctx;
    ctx.shape = ModelShape{1, H, H, d};
    ctx.attn.softmax_scale = 0.125f;
    ctx.seed = 5;
    auto codec = e.make_cpu(p, ctx.shape);
    codec->fit(0, {&calib}, ctx);
    const auto enc = codec->encode(0, kv, nullptr, ctx);
    std::map<std::string, std::vector<uint8_t>> buf;
    for (auto& b : enc->buffers()) buf[b.name] = b.bytes;
    const auto* codes = buf.at("k.codes").data();
    const auto* cb16 = reinterpret_cast<const uint16_t*>(buf.at("k.codebooks").data());
    std::vector<float> cb(buf.at("k.codebooks").size() / 2);
    for (size_t i = 0; i < cb.size(); ++i) cb[i] = f16_to_f32(cb16[i]);
    kernels::gpu::Part v;
    if (p.at("values") == "fp16") {
      v.fmt = kernels::gpu::Fmt::kF16;
      v.q_tokens = 0;
      v.tail = reinterpret_cast<const uint16_t*>(buf.at("v.fp16").data());
    } else {
      v.fmt = kernels::gpu::Fmt::kTokenQuant;
      v.bits = 4, v.group = 32, v.q_tokens = C;
      v.codes = buf.at("v.codes").data();
      v.sm = reinterpret_cast<const kernels::uq::GroupParams*>(buf.at("v.scale_min").data());
    }
    Rng rq(77);
    for (int g = 0; g < H; ++g) {
      std::vector<float> q(d), lut(static_cast<size_t>(m) * K), cpu_o(d), cpu_s(C);
      for (auto& x : q) x = static_cast<float>(rq.normal());
      Scratch scratch;
      enc->attend(g, q.data(), cpu_o.data(), scratch);
      ASSERT_TRUE(enc->scores(g, q.data(), cpu_s.data(), scratch));
      for (int i = 0; i < m; ++i)
        for (int c = 0; c < K; ++c)
          lut[i * K + c] = codecs::pq::lut_entry(q.data() + i * dsub,
                                                 cb.data() + ((static_cast<size_t>(g) * m + i) * K + c) * dsub, dsub);
      for (int chunk : {64, 2048}) {
        float M = -INFINITY, L = 0.f;
        std::vector<float> o(d, 0.f);
        double score_err = 0, smax = 0;
        for (int64_t t0 = 0; t0 < C; t0 += chunk) {
          const int64_t n = std::min<int64_t>(chunk, C - t0);
          std::vector<float> s(n);
          float cm = -INFINITY;
          for (int64_t i = 0; i < n; ++i) {
            s[i] = softcap_f(codecs::pq::table_sum(lut.data(), codes + (g * C + t0 + i) * m, m, K) * ctx.attn.softmax_scale,
                             0.f);
            score_err = std::max(score_err, static_cast<double>(std::fabs(s[i] - cpu_s[t0 + i])));
            smax = std::max(smax, static_cast<double>(std::fabs(cpu_s[t0 + i])));
            cm = std::max(cm, s[i]);
          }
          float cl = 0.f;
          for (auto& x : s) cl += (x = std::exp(x - cm));
          std::vector<float> co(d, 0.f);
          for (int j = 0; j < d; ++j)
            for (int64_t i = 0; i < n; ++i) co[j] += s[i] * kernels::gpu::load(v, C, d, g, t0 + i, j);
          const auto f = kernels::gpu::merge_factors(M, cm);
          L = L * f.a + cl * f.b;
          for (int j = 0; j < d; ++j) o[j] = o[j] * f.a + co[j] * f.b;
          M = f.m;
        }
        double num = 0, den = 0;
        for (int j = 0; j < d; ++j) {
          num += (o[j] / L - cpu_o[j]) * (o[j] / L - cpu_o[j]);
          den += cpu_o[j] * cpu_o[j];
        }
        EXPECT_LE(score_err / (1 + smax), kSelftestScoreTol) << "head " << g << " chunk " << chunk;
        EXPECT_LE(std::sqrt(num / den), kSelftestAttendTol) << "head " << g << " chunk " << chunk;
      }
    }
  }
}

}  // namespace
}  // namespace kvb
