// The shared kernels of kernels/cuda for packed variable-length heads (LayerView::row_off, the eviction codecs):
// the split-context attention over a hand-made packed fp16 view against a float64 host softmax, and the
// packed fp16 row gather against the host conversion (label gpu). The reference per head g over its n_g rows:
//   s_t = scale·<q, k_t>,  o = Σ_t e^{s_t − max s} v_t / Σ_t e^{s_t − max s}  (o = 0 for n_g = 0),
// with k, v the stored fp16 rows. Checks: output rel-L2 <= kSelftestAttendTol, logits within
// kSelftestScoreTol, logits past a head's last row −inf, nothing NaN, for chunk sizes that put whole splits
// past the short heads' ends. Runs on the emulator build and on a GPU; skips without a CUDA backend or device.
#include <gtest/gtest.h>

#if defined(KVB_WITH_CUDA)
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/layer_view.h"
#include "kernels/formats/fp16.h"
#include "kvb/bench/selftest.h"
#include "kvb/core/half.h"
#include "kvb/core/rng.h"
#include "kvb/cuda/runtime.h"
#include "kvb/run/device_api.h"

namespace kvb {
namespace {

using cuda::DeviceBuffer;
using kernels::gpu::AttendArgs;
using kernels::gpu::LayerView;

bool device_ready(std::string* why) {
  std::string err;
  if (cuda::device_count(&err) == 0) {
    *why = "no usable CUDA device: " + err;
    return false;
  }
  return true;
}

template <class T>
std::vector<T> to_host(const DeviceBuffer& b) {
  std::vector<T> h(b.bytes() / sizeof(T));
  if (!h.empty()) b.download(h.data(), b.bytes(), cuda::run_stream());
  return h;
}

/// A packed view with the given row counts per head: fp16 rows of seeded gaussians (keys ×2).
struct PackedCase {
  std::vector<int64_t> counts;
  int d = 64;
  uint64_t seed = 1;
  std::string describe() const {
    return fmt::format("packed counts [{}] d={} seed={}", fmt::join(counts, ","), d, seed);
  }
};

struct HostPacked {
  int heads = 0, d = 0;
  int64_t C = 0;
  std::vector<int64_t> off;
  std::vector<uint16_t> k, v;
};

HostPacked make_packed(const PackedCase& pc) {
  HostPacked h;
  h.heads = static_cast<int>(pc.counts.size());
  h.d = pc.d;
  h.off.assign(1, 0);
  for (int64_t n : pc.counts) h.off.push_back(h.off.back() + n), h.C = std::max(h.C, n);
  Rng r(pc.seed);
  const size_t n = static_cast<size_t>(h.off.back()) * pc.d;
  h.k.resize(n), h.v.resize(n);
  for (auto& x : h.k) x = f32_to_f16(static_cast<float>(r.normal() * 2.0));
  for (auto& x : h.v) x = f32_to_f16(static_cast<float>(r.normal()));
  return h;
}

/// The float64 reference of one query against head g: output [d] and logits [n_g].
void reference(const HostPacked& h, int g, const float* q, float scale, std::vector<double>* o, std::vector<double>* s) {
  const int64_t n = h.off[g + 1] - h.off[g];
  s->assign(static_cast<size_t>(n), 0.0);
  o->assign(static_cast<size_t>(h.d), 0.0);
  double m = -INFINITY;
  for (int64_t t = 0; t < n; ++t) {
    double acc = 0;
    for (int j = 0; j < h.d; ++j) acc += static_cast<double>(q[j]) * f16_to_f32(h.k[(h.off[g] + t) * h.d + j]);
    (*s)[t] = acc * scale;
    m = std::max(m, (*s)[t]);
  }
  double l = 0;
  for (int64_t t = 0; t < n; ++t) {
    const double p = std::exp((*s)[t] - m);
    l += p;
    for (int j = 0; j < h.d; ++j) (*o)[j] += p * f16_to_f32(h.v[(h.off[g] + t) * h.d + j]);
  }
  if (l > 0)
    for (auto& x : *o) x /= l;
}

/// Every head's queries (3 each) through launch_attend with chunk `chunk` (0: plan_attend's choice).
void check_case(const PackedCase& pc, int chunk) {
  SCOPED_TRACE(pc.describe() + fmt::format(" chunk={}", chunk));
  const HostPacked h = make_packed(pc);
  const float scale = 1.f / std::sqrt(static_cast<float>(h.d));
  const int per = 3, nq = h.heads * per;
  Rng rq(pc.seed + 7);
  std::vector<float> q(static_cast<size_t>(nq) * h.d);
  for (auto& x : q) x = static_cast<float>(rq.normal());
  std::vector<int> qh(static_cast<size_t>(nq));
  for (int i = 0; i < nq; ++i) qh[i] = i / per;
  const cudaStream_t st = cuda::run_stream();
  DeviceBuffer dk = DeviceBuffer::from(h.k), dv = DeviceBuffer::from(h.v), doff = DeviceBuffer::from(h.off);
  DeviceBuffer dq = DeviceBuffer::from(q), dqh = DeviceBuffer::from(qh);
  AttendArgs a;
  a.L.heads = h.heads, a.L.C = h.C, a.L.d = h.d;
  a.L.k.tail = dk.as<uint16_t>(), a.L.v.tail = dv.as<uint16_t>();
  a.L.row_off = doff.as<int64_t>();
  a.q = dq.as<float>(), a.q_head = dqh.as<int>(), a.nq = nq, a.softmax_scale = scale;
  int64_t work = kernels::gpu::plan_attend(nq, h.C, h.d, &a.chunk, &a.splits);
  if (chunk > 0) {
    a.chunk = chunk;
    a.splits = static_cast<int>((h.C + chunk - 1) / chunk);
    work = static_cast<int64_t>(nq) * a.splits * (h.d + 2);
  }
  DeviceBuffer dwork(static_cast<size_t>(work) * sizeof(float));
  DeviceBuffer dout(static_cast<size_t>(nq) * h.d * sizeof(float));
  DeviceBuffer dlog(static_cast<size_t>(nq) * h.C * sizeof(float));
  a.work = dwork.as<float>(), a.out = dout.as<float>(), a.logits = h.C > 0 ? dlog.as<float>() : nullptr;
  ASSERT_EQ(kernels::gpu::launch_attend(a, st), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(st), cudaSuccess);
  const auto out = to_host<float>(dout), logits = to_host<float>(dlog);
  std::vector<double> ro, rs;
  for (int i = 0; i < nq; ++i) {
    const int g = qh[i];
    const int64_t n = h.off[g + 1] - h.off[g];
    reference(h, g, q.data() + static_cast<size_t>(i) * h.d, scale, &ro, &rs);
    double num = 0, den = 0;
    bool finite = true;
    for (int j = 0; j < h.d; ++j) {
      const double x = out[static_cast<size_t>(i) * h.d + j];
      finite = finite && std::isfinite(x);
      num += (x - ro[j]) * (x - ro[j]), den += ro[j] * ro[j];
    }
    ASSERT_TRUE(finite) << "query " << i << " head " << g;
    if (n == 0) {
      for (int j = 0; j < h.d; ++j) EXPECT_EQ(out[static_cast<size_t>(i) * h.d + j], 0.f) << "empty head " << g;
    } else {
      EXPECT_LE(std::sqrt(num / den), kSelftestAttendTol) << "query " << i << " head " << g << " rows " << n;
    }
    double err = 0, mx = 0;
    for (int64_t t = 0; t < h.C; ++t) {
      const float x = logits[static_cast<size_t>(i) * h.C + t];
      if (t >= n) {
        EXPECT_EQ(x, -INFINITY) << "query " << i << " slot " << t << " past head " << g << "'s " << n << " rows";
        continue;
      }
      mx = std::max(mx, std::fabs(rs[t]));
      err = std::max(err, std::fabs(x - rs[t]));
    }
    EXPECT_LE(err / (1 + mx), kSelftestScoreTol) << "query " << i << " head " << g;
  }
}

TEST(PackedAttend, VariableLengthHeadsMatchTheHostSoftmax) {
  std::string why;
  if (!device_ready(&why)) GTEST_SKIP() << why;
  // Unequal heads, an empty head, a one-row head; odd lengths (1, 7) and head_dim 96.
  const std::vector<PackedCase> cases = {
      {{7, 1, 0, 3}, 64, 11},   {{1}, 64, 12},        {{7}, 96, 13},         {{1, 7}, 96, 14},
      {{200, 2, 129, 0}, 64, 15}, {{300, 1, 65}, 96, 16}, {{0, 5, 64, 128}, 128, 17},
  };
  for (const auto& pc : cases)
    for (int chunk : {0, 64, 2048}) check_case(pc, chunk);
}

TEST(PackedAttend, EveryHeadEmptyAttendsToZero) {
  std::string why;
  if (!device_ready(&why)) GTEST_SKIP() << why;
  check_case({{0, 0}, 64, 21}, 0);  // C = 0: no split at all, the merge alone writes the zeros
}

TEST(PackedAttend, QuantizedPartsOrWeightClassesAreRejected) {
  std::string why;
  if (!device_ready(&why)) GTEST_SKIP() << why;
  const HostPacked h = make_packed({{3, 2}, 64, 31});
  DeviceBuffer dk = DeviceBuffer::from(h.k), doff = DeviceBuffer::from(h.off), dq(64 * sizeof(float));
  const std::vector<int> qh = {0};
  DeviceBuffer dqh = DeviceBuffer::from(qh), dwork(66 * sizeof(float)), dout(64 * sizeof(float));
  for (int bad = 0; bad < 2; ++bad) {
    AttendArgs a;
    a.L.heads = 2, a.L.C = 3, a.L.d = 64;
    a.L.k.tail = a.L.v.tail = dk.as<uint16_t>();
    a.L.row_off = doff.as<int64_t>();
    if (bad == 0) a.L.k.q_tokens = 1;
    else a.L.rows.n = 1;
    a.q = dq.as<float>(), a.q_head = dqh.as<int>(), a.nq = 1;
    a.work = dwork.as<float>(), a.out = dout.as<float>(), a.chunk = 64, a.splits = 1;
    EXPECT_EQ(kernels::gpu::launch_attend(a, cuda::run_stream()), cudaErrorInvalidValue) << "case " << bad;
  }
}

TEST(PackedGather, RowsOfEachHeadAreTheSaturatedFp16OfTheirPositions) {
  std::string why;
  if (!device_ready(&why)) GTEST_SKIP() << why;
  for (int d : {64, 96}) {
    const int H = 3;
    const int64_t C = 37;
    const std::vector<int64_t> counts = {5, 0, 37};
    SCOPED_TRACE(fmt::format("d={} C={} counts [{}]", d, C, fmt::join(counts, ",")));
    Rng r(40 + d);
    std::vector<float> x(static_cast<size_t>(H) * C * d);
    for (auto& e : x) e = static_cast<float>(r.normal() * 3.0);
    x[5] = 1e6f, x[7] = -1e6f;  // saturate to ±65504
    std::vector<int64_t> off = {0};
    std::vector<int32_t> pos;
    for (int g = 0; g < H; ++g) {
      for (int64_t i = 0; i < counts[g]; ++i) pos.push_back(static_cast<int32_t>((i * 7 + g) % C));
      off.push_back(static_cast<int64_t>(pos.size()));
    }
    DeviceBuffer dx = DeviceBuffer::from(x), dpos = DeviceBuffer::from(pos), doff = DeviceBuffer::from(off);
    DeviceBuffer dout(pos.size() * d * sizeof(uint16_t));
    ASSERT_EQ(kernels::gpu::launch_gather_f16_packed(dx.as<float>(), H, C, d, dpos.as<int32_t>(), doff.as<int64_t>(),
                                                     37, dout.as<uint16_t>(), cuda::run_stream()),
              cudaSuccess);
    const auto got = to_host<uint16_t>(dout);
    for (int g = 0; g < H; ++g)
      for (int64_t r0 = off[g]; r0 < off[g + 1]; ++r0)
        for (int j = 0; j < d; ++j)
          ASSERT_EQ(got[r0 * d + j], kernels::f32_to_f16_sat(x[(g * C + pos[r0]) * d + j])) << "head " << g << " row " << r0;
    // The equal-length form (codecs/select): pos [heads][rows].
    const int64_t rows = 4;
    std::vector<int32_t> p2(static_cast<size_t>(H * rows));
    for (size_t i = 0; i < p2.size(); ++i) p2[i] = static_cast<int32_t>((i * 11) % C);
    DeviceBuffer dp2 = DeviceBuffer::from(p2), do2(p2.size() * d * sizeof(uint16_t));
    ASSERT_EQ(kernels::gpu::launch_gather_f16(dx.as<float>(), H, C, d, dp2.as<int32_t>(), rows, do2.as<uint16_t>(),
                                              cuda::run_stream()),
              cudaSuccess);
    const auto g2 = to_host<uint16_t>(do2);
    for (int g = 0; g < H; ++g)
      for (int64_t i = 0; i < rows; ++i)
        for (int j = 0; j < d; ++j)
          ASSERT_EQ(g2[(g * rows + i) * d + j], kernels::f32_to_f16_sat(x[(g * C + p2[g * rows + i]) * d + j]));
  }
}

}  // namespace
}  // namespace kvb

#else
TEST(PackedAttend, NeedsTheCudaBackend) { GTEST_SKIP() << "this build has no CUDA backend"; }
#endif
