#include "kvb/bench/selftest.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>

#include <fmt/format.h>

#include "kvb/core/error.h"
#include "kvb/core/registry.h"
#include "kvb/core/rng.h"
#include "kvb/core/tensor.h"

namespace kvb {

std::string SelftestCase::describe() const {
  std::string s = fmt::format("{}{} H={}x{} C={} d={} seed={}", codec, params.empty() ? "" : params.dump(), kv_heads,
                               group, tokens, head_dim, seed);
  if (rope != "half" || pos0 != 0) s += fmt::format(" rope={} pos0={}", rope, pos0);
  return s;
}

bool SelftestResult::pass() const {
  if (skipped) return true;
  return !checks.empty() && std::all_of(checks.begin(), checks.end(), [](const SelftestCheck& k) { return k.pass; });
}

std::vector<SelftestCase> selftest_cases(const std::string& device, bool full) {
  std::vector<std::pair<std::string, Json>> variants;
  for (const auto& e : registry().all()) {
    const bool on_device = device == "cuda" ? static_cast<bool>(e.make_cuda) : true;
    if (!on_device) continue;
    for (const Json& p : e.selftest_variants) variants.push_back({e.info.name, p});
  }
  std::vector<int64_t> contexts = {1, 7, 129, 4097};
  if (full && device == "cuda") contexts.insert(contexts.end(), {32768, 131072});
  std::vector<SelftestCase> out;
  uint64_t seed = 1;
  for (const auto& [name, params] : variants)
    for (int d : {64, 96, 128, 256})
      for (int64_t C : contexts) {
        if (C > 4097 && d != 128) continue;  // long contexts at the production head_dim only
        SelftestCase c;
        c.codec = name;
        c.params = params;
        c.head_dim = d;
        c.tokens = C;
        c.kv_heads = 2;
        c.group = (d == 96 || C == 7) ? 1 : 4;
        c.seed = seed++;
        out.push_back(std::move(c));
      }
  return out;
}

namespace {

/// A seeded cache with the features quantizers care about: gaussian rows, four key channels 8x larger
/// (outlier channels, as post-RoPE keys have) and a per-token offset on values.
LayerKV make_cache(const SelftestCase& c) {
  Rng r(derive_seed(c.seed, {0x5e1f}));
  LayerKV kv;
  kv.kv_heads = c.kv_heads;
  kv.tokens = c.tokens;
  kv.head_dim = c.head_dim;
  kv.pos0 = c.pos0;
  const size_t n = static_cast<size_t>(c.kv_heads) * c.tokens * c.head_dim;
  kv.k.resize(n);
  kv.v.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const int j = static_cast<int>(i % c.head_dim);
    kv.k[i] = static_cast<float>(r.normal() * (j % 29 == 3 ? 8.0 : 1.0));
    kv.v[i] = static_cast<float>(r.normal() + 0.5 * std::sin(static_cast<double>(i / c.head_dim)));
  }
  // Observation queries of the last min(32, C) positions (for the eviction codecs), from their own stream:
  // each a noisy copy of a key its position can see, so the window attention has peaks to find.
  Rng ro(derive_seed(c.seed, {0x0b5}));
  ObsQueries& ob = kv.obs;
  ob.heads = c.kv_heads * c.group, ob.n = std::min<int64_t>(32, c.tokens), ob.head_dim = c.head_dim;
  for (int64_t i = 0; i < ob.n; ++i) ob.positions.push_back(c.tokens - ob.n + i);
  ob.q.resize(static_cast<size_t>(ob.heads) * ob.n * c.head_dim);
  for (int h = 0; h < ob.heads; ++h)
    for (int64_t i = 0; i < ob.n; ++i) {
      const int64_t t = static_cast<int64_t>(ro.below(static_cast<uint64_t>(ob.positions[i] + 1)));
      const float* k = kv.k_head(h / c.group) + t * c.head_dim;
      float* q = ob.q.data() + (static_cast<size_t>(h) * ob.n + i) * c.head_dim;
      for (int j = 0; j < c.head_dim; ++j) q[j] = 0.5f * k[j] + static_cast<float>(ro.normal());
    }
  return kv;
}

double max_rel_l2(const std::vector<float>& a, const std::vector<float>& b, int d) {
  double worst = 0;
  for (size_t o = 0; o + d <= a.size(); o += d) {
    double num = 0, den = 0;
    for (int j = 0; j < d; ++j) {
      const double e = static_cast<double>(a[o + j]) - b[o + j];
      num += e * e;
      den += static_cast<double>(b[o + j]) * b[o + j];
    }
    worst = std::max(worst, std::sqrt(num) / std::max(std::sqrt(den), 1e-30));
  }
  return worst;
}

}  // namespace

SelftestResult run_selftest_case(const SelftestCase& c, const std::string& device) {
  SelftestResult res;
  res.c = c;
  const CodecEntry* e = registry().find(c.codec);
  KVB_CHECK(e != nullptr, UsageError, "selftest: unknown codec \"{}\" (registered: {})", c.codec, registry().names());
  const bool cuda = device == "cuda";
  res.compared = cuda ? "cuda vs cpu" : "cpu vs ref";
  if (cuda && !e->make_cuda) {
    res.skipped = true;
    res.reason = "no CUDA backend";
    return res;
  }
  ModelShape shape;
  shape.n_kv_heads = c.kv_heads;
  shape.n_heads = c.kv_heads * c.group;
  shape.head_dim = c.head_dim;
  shape.n_layers = 1;
  CodecContext ctx;
  ctx.shape = shape;
  ctx.attn.softmax_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
  ctx.seed = derive_seed(c.seed, {0xc0dec});
  // Keys as a RoPE model caches them (kvquant undoes and re-applies RoPE; every other codec ignores this).
  ctx.rope = RopeInfo{c.rope != "none", c.rope, 10000.0};
  const LayerKV kv = make_cache(c);
  std::unique_ptr<EncodedLayer> a, b;  // a: the backend under test, b: what it is compared with
  try {
    const Json params = resolve_params(e->info.params, c.params, c.codec + ".params");
    auto ca = cuda ? e->make_cuda(params, shape) : e->make_cpu(params, shape);
    auto cb = cuda ? e->make_cpu(params, shape) : e->make_ref(params, shape);
    if (e->info.trainable) {
      // The tested side fits on a calibration cache of another seed than the evaluated one (at most 1024
      // tokens: the checks compare two backends from one fitted state, whatever its quality).
      SelftestCase cc = c;
      cc.seed = derive_seed(c.seed, {0xca1});
      cc.tokens = std::min<int64_t>(c.tokens, 1024);
      const LayerKV calib = make_cache(cc);
      ca->fit(0, {&calib}, ctx);
      fit_like(*cb, *ca, 0, {&calib}, ctx);  // one training: cb encodes from ca's trained state
    }
    a = ca->encode(0, kv, nullptr, ctx);
    b = cb->encode(0, kv, nullptr, ctx);
  } catch (const Unsupported& u) {
    res.skipped = true;
    res.reason = u.what();
    return res;
  } catch (const std::exception& x) {
    res.checks.push_back({"encode", 1, 0, false, x.what()});
    return res;
  }

  // Stored bytes (only where both sides expose them: the CPU and CUDA layers do, references do not).
  const auto ba = a->buffers(), bb = b->buffers();
  if (!ba.empty() && !bb.empty()) {
    std::map<std::string, const std::vector<uint8_t>*> am;
    for (const auto& x : ba) am[x.name] = &x.bytes;
    double diff = 0;
    std::string detail;
    for (const auto& y : bb) {
      const auto it = am.find(y.name);
      if (it == am.end() || it->second->size() != y.bytes.size()) {
        diff += static_cast<double>(y.bytes.size());
        detail += fmt::format("{}: size {} vs {}; ", y.name, it == am.end() ? 0 : it->second->size(), y.bytes.size());
        continue;
      }
      int64_t n = 0, first = -1;
      for (size_t i = 0; i < y.bytes.size(); ++i)
        if ((*it->second)[i] != y.bytes[i]) {
          if (first < 0) first = static_cast<int64_t>(i);
          ++n;
        }
      if (n) detail += fmt::format("{}: {} bytes differ (first at {}); ", y.name, n, first);
      diff += static_cast<double>(n);
    }
    res.checks.push_back({"buffers", diff, 0, diff == 0, detail});
  }
  {
    const Storage sa = a->storage(), sb = b->storage();
    auto key = [](const StorageItem& i) { return fmt::format("{}/{}/{}/{}", i.name, static_cast<int>(i.kind), i.bytes, i.tokens); };
    std::vector<std::string> ka, kb;
    for (const auto& i : sa.items) ka.push_back(key(i));
    for (const auto& i : sb.items) kb.push_back(key(i));
    std::sort(ka.begin(), ka.end());
    std::sort(kb.begin(), kb.end());
    std::vector<std::string> sym;
    std::set_symmetric_difference(ka.begin(), ka.end(), kb.begin(), kb.end(), std::back_inserter(sym));
    std::string detail;
    for (const auto& s : sym) detail += s + "; ";
    res.checks.push_back({"storage", static_cast<double>(sym.size()), 0, sym.empty(), detail});
  }

  // Queries: 3 per query head; scores and attend per query, attend_many per GQA group.
  const int d = c.head_dim;
  Rng rq(derive_seed(c.seed, {0x9e}));
  const int nq = 3;
  std::vector<float> q(static_cast<size_t>(shape.n_heads) * nq * d);
  for (auto& x : q) x = static_cast<float>(rq.normal());
  Scratch sa, sb;
  std::vector<float> oa, ob, la(static_cast<size_t>(c.tokens)), lb(static_cast<size_t>(c.tokens));
  double score_err = 0;
  bool have_scores = true;
  try {
    for (int h = 0; h < shape.n_heads; ++h)
      for (int i = 0; i < nq; ++i) {
        const float* qq = q.data() + (static_cast<size_t>(h) * nq + i) * d;
        const int g = h / c.group;
        std::vector<float> xa(d), xb(d);
        a->attend(g, qq, xa.data(), sa);
        b->attend(g, qq, xb.data(), sb);
        oa.insert(oa.end(), xa.begin(), xa.end());
        ob.insert(ob.end(), xb.begin(), xb.end());
        if (have_scores && a->scores(g, qq, la.data(), sa) && b->scores(g, qq, lb.data(), sb)) {
          double mx = 0, err = 0;
          for (int64_t t = 0; t < c.tokens; ++t) {
            mx = std::max(mx, std::fabs(static_cast<double>(lb[t])));
            err = std::max(err, std::fabs(static_cast<double>(la[t]) - lb[t]));
          }
          score_err = std::max(score_err, err / (1.0 + mx));
        } else {
          have_scores = false;
        }
      }
    if (have_scores) res.checks.push_back({"scores", score_err, kSelftestScoreTol, score_err <= kSelftestScoreTol, ""});
    const double ae = max_rel_l2(oa, ob, d);
    res.checks.push_back({"attend", ae, kSelftestAttendTol, ae <= kSelftestAttendTol && std::isfinite(ae), ""});
    // attend_many of a GQA group on the tested backend against the compared backend's attend().
    std::vector<float> om(static_cast<size_t>(c.group) * d);
    std::vector<const float*> qs(static_cast<size_t>(c.group));
    std::vector<float*> outs(static_cast<size_t>(c.group));
    std::vector<float> mm, mb;
    for (int g = 0; g < c.kv_heads; ++g)
      for (int i = 0; i < nq; ++i) {
        for (int j = 0; j < c.group; ++j) {
          qs[j] = q.data() + (static_cast<size_t>(g * c.group + j) * nq + i) * d;
          outs[j] = om.data() + static_cast<size_t>(j) * d;
        }
        a->attend_many(g, qs.data(), c.group, outs.data(), sa);
        mm.insert(mm.end(), om.begin(), om.end());
        for (int j = 0; j < c.group; ++j) {
          const float* ref = ob.data() + (static_cast<size_t>(g * c.group + j) * nq + i) * d;
          mb.insert(mb.end(), ref, ref + d);
        }
      }
    const double me = max_rel_l2(mm, mb, d);
    res.checks.push_back({"attend_many", me, kSelftestAttendTol, me <= kSelftestAttendTol && std::isfinite(me), ""});
  } catch (const std::exception& x) {
    res.checks.push_back({"attend", 1, 0, false, x.what()});
  }
  return res;
}

}  // namespace kvb
