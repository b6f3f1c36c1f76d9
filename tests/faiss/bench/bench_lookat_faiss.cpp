// bench_lookat_faiss: lookat's table-sum scoring against faiss IndexPQ search (inner product) with the same
// codebooks, codes and queries, one and two threads, in one run; then lookat's fidelity against context
// length (1k -> 32k) on synthetic post-RoPE keys, with codebooks calibrated on another sequence.
//
//   build/tests/bench_lookat_faiss [--keys N] [--queries Q] [--reps R] [--skip-fidelity] [--json PATH]
// Prints markdown tables; --json writes the same figures (every printed number) as JSON.
#include <faiss/IndexPQ.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "codecs/pq/lookat_codec.h"
#include "kvb/attention/exact.h"
#include "kvb/core/params.h"
#include "kvb/core/registry.h"
#include "kvb/core/rng.h"

namespace {

using namespace kvb;
using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// Synthetic post-RoPE attention data of one KV head: pre-RoPE keys u_t = mu + sc ⊙ z_t (per-channel means,
/// scales, four outlier channels), rotated by RoPE at position t (theta 10000, pairs (j, j + d/2) as in
/// Llama); queries at position P: a shared direction plus an alignment with a random earlier key, rotated by
/// RoPE at P. Values: gaussian rows with a per-token scale.
struct RopeHead {
  int d;
  std::vector<float> mu, sc, dir;
  explicit RopeHead(int d_, uint64_t seed) : d(d_), mu(d_), sc(d_), dir(d_) {
    Rng r(seed);
    for (int j = 0; j < d; ++j) {
      mu[j] = static_cast<float>(0.5 * r.normal());
      sc[j] = static_cast<float>(std::exp(0.3 * r.normal()));
    }
    for (int i = 0; i < 4; ++i) mu[r.below(d)] = (r.uniform() < 0.5 ? -8.f : 8.f);
    double n = 0;
    for (int j = 0; j < d; ++j) n += (dir[j] = static_cast<float>(r.normal())) * dir[j];
    for (int j = 0; j < d; ++j) dir[j] = static_cast<float>(dir[j] / std::sqrt(n));
  }
  void rope(float* x, int64_t pos) const {
    const int h = d / 2;
    for (int j = 0; j < h; ++j) {
      const double a = static_cast<double>(pos) * std::pow(10000.0, -2.0 * j / d);
      const double c = std::cos(a), s = std::sin(a), x0 = x[j], x1 = x[j + h];
      x[j] = static_cast<float>(x0 * c - x1 * s);
      x[j + h] = static_cast<float>(x0 * s + x1 * c);
    }
  }
  /// A sequence of n tokens (positions 0..n-1): k, v [n][d] and the pre-RoPE keys (for queries).
  void sequence(int64_t n, uint64_t seed, std::vector<float>& k, std::vector<float>& v, std::vector<float>& u) const {
    Rng r(seed);
    k.resize(n * d), v.resize(n * d), u.resize(n * d);
    for (int64_t t = 0; t < n; ++t) {
      const float vs = static_cast<float>(std::exp(0.5 * r.normal()));
      for (int j = 0; j < d; ++j) {
        u[t * d + j] = mu[j] + sc[j] * static_cast<float>(r.normal());
        v[t * d + j] = vs * static_cast<float>(r.normal());
      }
      std::memcpy(&k[t * d], &u[t * d], sizeof(float) * d);
      rope(&k[t * d], t);
    }
  }
  /// A decode query at position pos attending to the first C tokens of a sequence with pre-RoPE keys u.
  std::vector<float> query(const std::vector<float>& u, int64_t C, int64_t pos, Rng& r) const {
    std::vector<float> q(d);
    const int64_t s = static_cast<int64_t>(r.below(static_cast<uint64_t>(C)));
    const float a = 0.4f * std::sqrt(static_cast<float>(d)), focus = static_cast<float>(1.5 * r.uniform());
    for (int j = 0; j < d; ++j)
      q[j] = a * dir[j] + focus * (u[s * d + j] - mu[j]) / sc[j] + 0.7f * static_cast<float>(r.normal());
    rope(q.data(), pos);
    return q;
  }
};

double spearman(const std::vector<double>& a, const std::vector<double>& b) {
  auto ranks = [](const std::vector<double>& x) {
    std::vector<size_t> idx(x.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::sort(idx.begin(), idx.end(), [&](size_t i, size_t j) { return x[i] < x[j]; });
    std::vector<double> r(x.size());
    for (size_t i = 0; i < idx.size();) {
      size_t j = i;
      while (j + 1 < idx.size() && x[idx[j + 1]] == x[idx[i]]) ++j;
      for (size_t k = i; k <= j; ++k) r[idx[k]] = 0.5 * static_cast<double>(i + j);
      i = j + 1;
    }
    return r;
  };
  const auto ra = ranks(a), rb = ranks(b);
  const double mean = 0.5 * static_cast<double>(a.size() - 1);
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ab += (ra[i] - mean) * (rb[i] - mean);
    aa += (ra[i] - mean) * (ra[i] - mean);
    bb += (rb[i] - mean) * (rb[i] - mean);
  }
  return aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : 1.0;
}

void throughput(int64_t n, int nq, int reps, Json& rows) {
  const int d = 128, K = 256;
  const RopeHead head(d, 11);
  std::vector<float> k, v, u, kc, vc, uc;
  head.sequence(n, 1, k, v, u);
  head.sequence(16384, 2, kc, vc, uc);  // calibration sequence
  Rng r(3);
  std::vector<float> Q;
  for (int i = 0; i < nq; ++i) {
    const auto q = head.query(u, n, n, r);
    Q.insert(Q.end(), q.begin(), q.end());
  }
  LayerKV cal;
  cal.kv_heads = 1, cal.tokens = 16384, cal.head_dim = d, cal.k = kc, cal.v = vc;
  std::printf("## Table-sum scoring vs faiss IndexPQ (inner product), d=%d, K=%d, %lld keys, %d queries, median of "
              "%d runs\n\n",
              d, K, static_cast<long long>(n), nq, reps);
  std::printf("| m | threads | lookat Mkeys/s | faiss IndexPQ Mkeys/s (k=10) | speed ratio lookat/faiss (median of per-repeat ratios) |\n");
  std::printf("|---|---|---|---|---|\n");
  for (int m : {4, 8, 16}) {
    codecs::LookatParams p;
    p.subspaces = m;
    p.iters = 10;  // codebook quality does not change the scoring speed
    const auto cb = codecs::pq::train(p, {&cal}, 0, 5);
    std::vector<uint8_t> codes(n * m);
    codecs::pq::encode_codes(k.data(), n, d, m, K, cb.c.data(), codes.data());
    const int dsub = d / m;
    std::vector<float> ct(static_cast<size_t>(m) * dsub * K);
    for (int i = 0; i < m; ++i)
      for (int c = 0; c < K; ++c)
        for (int j = 0; j < dsub; ++j) ct[(static_cast<size_t>(i) * dsub + j) * K + c] = cb.sub(0, i)[c * dsub + j];
    faiss::IndexPQ index(d, m, 8, faiss::METRIC_INNER_PRODUCT);
    index.pq.centroids = cb.c;
    index.is_trained = true;
    index.codes = codes;
    index.ntotal = n;
    std::vector<float> scores(static_cast<size_t>(nq) * n);
    const int kk = 10;
    std::vector<float> D(static_cast<size_t>(nq) * kk);
    std::vector<faiss::Index::idx_t> I(D.size());
    for (int threads : {1, 2}) {
      omp_set_num_threads(threads);
      std::vector<double> t_ours, t_faiss;
      auto run_ours = [&] {
#pragma omp parallel
        {
          std::vector<float> lut(static_cast<size_t>(m) * K);
#pragma omp for schedule(static)
          for (int qi = 0; qi < nq; ++qi) {
            codecs::pq::luts_transposed(&Q[static_cast<size_t>(qi) * d], m, dsub, K, ct.data(), lut.data());
            codecs::pq::table_sums(lut.data(), codes.data(), n, m, K, &scores[static_cast<size_t>(qi) * n]);
          }
        }
      };
      auto run_faiss = [&] { index.search(nq, Q.data(), kk, D.data(), I.data()); };
      auto seconds = [](auto&& f) {
        const auto t0 = Clock::now();
        f();
        return std::chrono::duration<double>(Clock::now() - t0).count();
      };
      std::vector<double> ratio;
      for (int rep = 0; rep < reps + 1; ++rep) {  // the first run warms up
        // Back to back, alternating which goes first, so both see the same machine load; the ratio is the
        // median of the per-repeat ratios.
        double a, b;
        if (rep % 2 == 0) {
          a = seconds(run_ours);
          b = seconds(run_faiss);
        } else {
          b = seconds(run_faiss);
          a = seconds(run_ours);
        }
        if (rep == 0) continue;
        t_ours.push_back(a);
        t_faiss.push_back(b);
        ratio.push_back(b / a);
      }
      // The same best key: faiss's top-1 is LOOKAT's argmax (up to float ties).
      int agree = 0;
      for (int qi = 0; qi < nq; ++qi) {
        const float* s = &scores[static_cast<size_t>(qi) * n];
        const int64_t best = std::max_element(s, s + n) - s;
        agree += (best == I[static_cast<size_t>(qi) * kk]) || (s[best] == s[I[static_cast<size_t>(qi) * kk]]);
      }
      const double keys = static_cast<double>(n) * nq;
      const double ours = keys / median(t_ours), theirs = keys / median(t_faiss);
      rows.push_back(Json{{"d", d}, {"K", K}, {"m", m}, {"threads", threads}, {"keys", n}, {"queries", nq},
                          {"repeats", reps}, {"lookat_keys_per_s", ours}, {"faiss_keys_per_s", theirs},
                          {"ratio_median", median(ratio)}, {"top1_agree", agree}});
      std::printf("| %d | %d | %.0f | %.0f | %.2fx |%s\n", m, threads, ours / 1e6, theirs / 1e6, median(ratio),
                  agree == nq ? "" : " (top-1 disagreement!)");
    }
  }
}

void fidelity(Json& rows) {
  const int d = 128;
  const int64_t Cmax = 32768;
  const RopeHead head(d, 21);
  std::vector<float> k, v, u, kc, vc, uc;
  head.sequence(Cmax, 7, k, v, u);
  head.sequence(Cmax, 8, kc, vc, uc);  // calibration: another sequence, positions 0..32k
  const auto& e = registry().at("lookat");
  const ModelShape shape{1, 1, 1, d};
  CodecContext ctx;
  ctx.shape = shape;
  ctx.attn.softmax_scale = 1.f / std::sqrt(static_cast<float>(d));
  ctx.seed = 99;
  std::printf("\n## Fidelity vs context length (synthetic post-RoPE keys, d=%d, values fp16, 24 queries per "
              "context at position C)\n\n",
              d);
  std::printf("| codebooks | C | output cosine | score Spearman |\n|---|---|---|---|\n");
  struct Variant {
    int m;
    int64_t calib_positions;
  };
  for (const Variant var : {Variant{4, Cmax}, Variant{16, Cmax}, Variant{16, 1024}}) {
    LayerKV cal;
    cal.kv_heads = 1, cal.tokens = var.calib_positions, cal.head_dim = d;
    cal.k.assign(kc.begin(), kc.begin() + var.calib_positions * d);
    cal.v.assign(vc.begin(), vc.begin() + var.calib_positions * d);
    auto codec = e.make_cpu(resolve_params(e.info.params, Json{{"subspaces", var.m}}, "lookat"), shape);
    codec->fit(0, {&cal}, ctx);
    for (int64_t C = 1024; C <= Cmax; C *= 2) {
      LayerKV kv;
      kv.kv_heads = 1, kv.tokens = C, kv.head_dim = d;
      kv.k.assign(k.begin(), k.begin() + C * d);
      kv.v.assign(v.begin(), v.begin() + C * d);
      const auto enc = codec->encode(0, kv, nullptr, ctx);
      Rng r(1000 + C);
      Scratch scratch;
      std::vector<float> s(C), o(d);
      std::vector<double> sh(C), se(C), oe(d);
      double cs = 0, sp = 0;
      const int nq = 24;
      for (int i = 0; i < nq; ++i) {
        const auto q = head.query(u, C, C, r);
        enc->scores(0, q.data(), s.data(), scratch);
        enc->attend(0, q.data(), o.data(), scratch);
        exact_attention_f64(kv.k.data(), kv.v.data(), C, d, q.data(), ctx.attn.softmax_scale, 0.0, se.data(), nullptr,
                            oe.data());
        for (int64_t t = 0; t < C; ++t) sh[t] = s[t];
        double ab = 0, aa = 0, bb = 0;
        for (int j = 0; j < d; ++j) ab += o[j] * oe[j], aa += o[j] * o[j], bb += oe[j] * oe[j];
        cs += ab / std::sqrt(aa * bb);
        sp += spearman(sh, se);
      }
      rows.push_back(Json{{"d", d}, {"m", var.m}, {"calibration_positions", var.calib_positions}, {"context", C},
                          {"queries", nq}, {"cosine_mean", cs / nq}, {"spearman_mean", sp / nq}});
      std::printf("| m=%d, calibrated on positions 0..%lld | %lld | %.4f | %.4f |\n", var.m,
                  static_cast<long long>(var.calib_positions - 1), static_cast<long long>(C), cs / nq, sp / nq);
    }
  }
}

/// The BLAS library this process mapped (faiss's PQ table construction runs through its sgemm): the files of
/// /proc/self/maps whose name contains "blas" (Debian's libblas.so.3 alternative resolves to the reference BLAS
/// under blas/ or to OpenBLAS under openblas-pthread/). "unknown" when /proc is not readable.
std::string loaded_blas() {
  std::ifstream maps("/proc/self/maps");
  if (!maps) return "unknown";
  std::string line, found;
  while (std::getline(maps, line)) {
    const size_t slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    if (path.find("blas") == std::string::npos || found.find(path) != std::string::npos) continue;
    found += (found.empty() ? "" : ", ") + path;
  }
  return found.empty() ? "none mapped" : found;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t n = 32768;
  int nq = 64, reps = 5;
  bool fid = true;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--keys" && i + 1 < argc) n = std::stoll(argv[++i]);
    else if (a == "--queries" && i + 1 < argc) nq = std::stoi(argv[++i]);
    else if (a == "--reps" && i + 1 < argc) reps = std::stoi(argv[++i]);
    else if (a == "--skip-fidelity") fid = false;
    else if (a == "--json" && i + 1 < argc) json_path = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--keys N] [--queries Q] [--reps R] [--skip-fidelity] [--json PATH]\n", argv[0]);
      return 2;
    }
  }
  const std::string blas = loaded_blas();
  std::printf("BLAS loaded (faiss's sgemm): %s\n\n", blas.c_str());
  Json doc{{"benchmark", "bench_lookat_faiss"}, {"blas", blas}, {"throughput", Json::array()},
           {"fidelity_vs_context", Json::array()}};
  throughput(n, nq, reps, doc["throughput"]);
  if (fid) fidelity(doc["fidelity_vs_context"]);
  if (!json_path.empty()) {
    std::FILE* f = std::fopen(json_path.c_str(), "w");
    if (!f) {
      std::fprintf(stderr, "cannot write %s\n", json_path.c_str());
      return 3;
    }
    std::fputs((doc.dump(1) + "\n").c_str(), f);
    std::fclose(f);
  }
  return 0;
}
