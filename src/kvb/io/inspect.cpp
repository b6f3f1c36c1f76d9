#include "kvb/io/inspect.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kvb/attention/exact.h"
#include "kvb/attention/exact_batch.h"

namespace kvb {
namespace {

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  const size_t m = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(m), v.end());
  double hi = v[m];
  if (v.size() % 2 == 0) {
    const double lo = *std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(m));
    return 0.5 * (lo + hi);
  }
  return hi;
}

HeadRange summarize(const std::vector<double>& per_head) {
  HeadRange r;
  if (per_head.empty()) return r;
  r.min = *std::min_element(per_head.begin(), per_head.end());
  r.max = *std::max_element(per_head.begin(), per_head.end());
  double s = 0;
  for (double x : per_head) s += x;
  r.mean = s / static_cast<double>(per_head.size());
  return r;
}

/// Accumulates one head's token-norm statistics over sequences.
struct NormAcc {
  double min = std::numeric_limits<double>::infinity(), max = 0, median_sum = 0, ratio_sum = 0;
  int n = 0;
  void add(const float* X, int64_t C, int d) {
    std::vector<double> norms(static_cast<size_t>(C));
    for (int64_t t = 0; t < C; ++t) {
      double s = 0;
      for (int j = 0; j < d; ++j) s += static_cast<double>(X[t * d + j]) * X[t * d + j];
      norms[static_cast<size_t>(t)] = std::sqrt(s);
    }
    const double med = median_of(norms);
    const double mx = *std::max_element(norms.begin(), norms.end());
    min = std::min(min, *std::min_element(norms.begin(), norms.end()));
    max = std::max(max, mx);
    median_sum += med;
    ratio_sum += med > 0 ? mx / med : 0;
    ++n;
  }
};

NormSpread spread_of(const std::vector<NormAcc>& heads) {
  NormSpread s;
  if (heads.empty() || heads[0].n == 0) return s;
  s.min = std::numeric_limits<double>::infinity();
  std::vector<double> ratios;
  double med = 0;
  for (const auto& h : heads) {
    s.min = std::min(s.min, h.min);
    s.max = std::max(s.max, h.max);
    med += h.median_sum / h.n;
    ratios.push_back(h.ratio_sum / h.n);
  }
  s.median = med / static_cast<double>(heads.size());
  s.ratio = summarize(ratios);
  return s;
}

Json range_json(const HeadRange& r) { return Json{{"mean", r.mean}, {"min", r.min}, {"max", r.max}}; }

}  // namespace

DumpStats inspect_dump(const KvDumpReader& reader, const InspectOptions& opts) {
  const DumpAttrs& a = reader.attrs();
  const ModelShape& ms = a.shape;
  const int D = ms.head_dim, G = ms.n_kv_heads, H = ms.n_heads, gs = ms.group();
  const auto& seqs = reader.sequences();
  const size_t n_seq = opts.max_sequences > 0 ? std::min<size_t>(seqs.size(), static_cast<size_t>(opts.max_sequences))
                                              : seqs.size();
  DumpStats out;
  out.sequences_used = static_cast<int>(n_seq);
  out.queries_per_head = std::numeric_limits<int64_t>::max();
  for (size_t s = 0; s < n_seq; ++s) {
    const int64_t n = opts.max_queries > 0 ? std::min(opts.max_queries, seqs[s].n_queries) : seqs[s].n_queries;
    out.queries_per_head = std::min(out.queries_per_head, n);
  }
  std::vector<double> o64, p64;
  for (int l = 0; l < ms.n_layers; ++l) {
    LayerStats ls;
    ls.layer = l;
    std::vector<NormAcc> kn(static_cast<size_t>(G)), vn(static_cast<size_t>(G));
    std::vector<double> ch_ratio(static_cast<size_t>(G) * D, 0.0);
    std::vector<double> ent(static_cast<size_t>(H), 0.0), sink(static_cast<size_t>(H), 0.0);
    std::vector<int64_t> nq_head(static_cast<size_t>(H), 0);
    bool all_ref = true;
    double ref_err = 0;
    for (size_t s = 0; s < n_seq; ++s) {
      const int64_t C = seqs[s].context_len;
      const LayerKV kv = reader.read_kv(s, l, 0, C);
      const LayerQueries lq = reader.read_queries(s, l, opts.max_queries);
      if (lq.ref_out.empty()) all_ref = false;
      const int64_t n = lq.n;
      for (int g = 0; g < G; ++g) {
        const float* K = kv.k_head(g);
        const float* V = kv.v_head(g);
        kn[static_cast<size_t>(g)].add(K, C, D);
        vn[static_cast<size_t>(g)].add(V, C, D);
        std::vector<double> rms(static_cast<size_t>(D), 0.0);
        for (int64_t t = 0; t < C; ++t)
          for (int j = 0; j < D; ++j) rms[static_cast<size_t>(j)] += static_cast<double>(K[t * D + j]) * K[t * D + j];
        for (double& x : rms) x = std::sqrt(x / static_cast<double>(C));
        const double med = median_of(rms);
        for (int j = 0; j < D; ++j)
          ch_ratio[static_cast<size_t>(g) * D + j] += med > 0 ? rms[static_cast<size_t>(j)] / med : 0.0;
        // Attention of the group's queries over the C context tokens.
        const int64_t nq = static_cast<int64_t>(gs) * n;
        o64.resize(static_cast<size_t>(nq) * D);
        p64.resize(static_cast<size_t>(nq) * C);
        exact_attention_batch_f64(K, V, C, D, lq.q.data() + static_cast<size_t>(g) * gs * n * D, nq, a.softmax_scale,
                                  a.attn_softcap, o64.data(), p64.data());
        for (int hh = 0; hh < gs; ++hh) {
          const int h = g * gs + hh;
          for (int64_t i = 0; i < n; ++i) {
            const size_t row = static_cast<size_t>(hh) * n + static_cast<size_t>(i);
            const double* p = p64.data() + row * C;
            ent[static_cast<size_t>(h)] += entropy(p, C);
            sink[static_cast<size_t>(h)] += p[0];
            ++nq_head[static_cast<size_t>(h)];
            if (!lq.ref_out.empty()) {
              const float* r = lq.ref(h, i);
              const double* o = o64.data() + row * D;
              double num = 0, den = 0;
              for (int j = 0; j < D; ++j) {
                num += (o[j] - r[j]) * (o[j] - r[j]);
                den += static_cast<double>(r[j]) * r[j];
              }
              ref_err = std::max(ref_err, std::sqrt(num) / std::max(std::sqrt(den), 1e-30));
            }
          }
        }
      }
    }
    ls.key_norm = spread_of(kn);
    ls.value_norm = spread_of(vn);
    const double ns = static_cast<double>(std::max<size_t>(n_seq, 1));
    std::vector<OutlierChannel> all;
    std::vector<double> head_top(static_cast<size_t>(G), 0.0);
    for (int g = 0; g < G; ++g)
      for (int j = 0; j < D; ++j) {
        const double r = ch_ratio[static_cast<size_t>(g) * D + j] / ns;
        all.push_back({g, j, r});
        head_top[static_cast<size_t>(g)] = std::max(head_top[static_cast<size_t>(g)], r);
      }
    const size_t top = std::min<size_t>(4, all.size());
    std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(top), all.end(),
                      [](const OutlierChannel& x, const OutlierChannel& y) {
                        return x.ratio != y.ratio ? x.ratio > y.ratio
                                                  : (x.kv_head != y.kv_head ? x.kv_head < y.kv_head : x.channel < y.channel);
                      });
    ls.top_outliers.assign(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(top));
    ls.outlier_ratio = summarize(head_top);
    for (int h = 0; h < H; ++h) {
      const double c = static_cast<double>(std::max<int64_t>(nq_head[static_cast<size_t>(h)], 1));
      ent[static_cast<size_t>(h)] /= c;
      sink[static_cast<size_t>(h)] /= c;
    }
    ls.entropy = summarize(ent);
    ls.sink_mass = summarize(sink);
    if (all_ref && n_seq > 0) ls.ref_max_rel_err = ref_err;
    out.layers.push_back(std::move(ls));
  }
  if (n_seq == 0) out.queries_per_head = 0;
  return out;
}

Json dump_summary_json(const KvDumpReader& r) {
  const DumpAttrs& a = r.attrs();
  Json attrs = {{"format", "kvdump"},
                {"format_version", 1},
                {"model", a.model},
                {"model_revision", a.model_revision},
                {"source", a.source},
                {"n_layers", a.shape.n_layers},
                {"n_heads", a.shape.n_heads},
                {"n_kv_heads", a.shape.n_kv_heads},
                {"head_dim", a.shape.head_dim},
                {"rope_applied", a.rope_applied},
                {"rope_style", a.rope_style},
                {"rope_theta", a.rope_theta},
                {"qk_norm", a.qk_norm},
                {"softmax_scale", a.softmax_scale},
                {"attn_softcap", a.attn_softcap},
                {"orig_dtype", a.orig_dtype}};
  if (a.seed) attrs["seed"] = *a.seed;
  if (!a.created_utc.empty()) attrs["created_utc"] = a.created_utc;
  Json seqs = Json::array();
  for (const auto& s : r.sequences()) {
    seqs.push_back({{"id", s.id},
                    {"n_tokens", s.n_tokens},
                    {"context_len", s.context_len},
                    {"n_queries", s.n_queries},
                    {"query_positions", {{"min", *std::min_element(s.query_positions.begin(), s.query_positions.end())},
                                         {"max", *std::max_element(s.query_positions.begin(), s.query_positions.end())}}},
                    {"has_ref_out", s.has_ref_out},
                    {"has_tokens", s.has_tokens},
                    {"sliding_window", s.sliding_window},
                    // The prompt's observation queries (docs/dump-format.md §1.2): W and their position range.
                    {"obs_queries", s.has_obs() ? Json{{"window", s.obs_positions.size()},
                                                       {"positions", {{"min", s.obs_positions.front()},
                                                                      {"max", s.obs_positions.back()}}}}
                                                : Json(nullptr)}});
  }
  return Json{{"file", r.path()}, {"dtype", to_string(r.dtype())}, {"attrs", attrs}, {"sequences", seqs}};
}

Json to_json(const DumpStats& st) {
  Json layers = Json::array();
  auto spread = [](const NormSpread& s) {
    return Json{{"min", s.min}, {"median", s.median}, {"max", s.max}, {"max_over_median", range_json(s.ratio)}};
  };
  for (const auto& l : st.layers) {
    Json outl = Json::array();
    for (const auto& o : l.top_outliers)
      outl.push_back({{"kv_head", o.kv_head}, {"channel", o.channel}, {"rms_over_median", o.ratio}});
    Json j = {{"layer", l.layer},
              {"key_norm", spread(l.key_norm)},
              {"value_norm", spread(l.value_norm)},
              {"outlier_channels", outl},
              {"outlier_ratio", range_json(l.outlier_ratio)},
              {"attention_entropy_nats", range_json(l.entropy)},
              {"sink_mass", range_json(l.sink_mass)}};
    j["ref_out_max_rel_err"] = l.ref_max_rel_err ? Json(*l.ref_max_rel_err) : Json(nullptr);
    layers.push_back(std::move(j));
  }
  return Json{{"queries_per_head", st.queries_per_head}, {"sequences_used", st.sequences_used}, {"layers", layers}};
}

}  // namespace kvb
