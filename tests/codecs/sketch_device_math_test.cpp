// The CUDA kernels' math of the sketch codecs (codecs/sketch/sketch_cuda.cu), evaluated on the host over the
// CPU encoder's own buffers, so it is checked on every machine (the GpuParity tests need a device):
//  * encode: the kernels compute every sign byte with sketch_math.h dense_sign_byte / sparse_sign_byte
//    (sequential float32 dot, certified, else float64 without FMA). Recomputed here byte by byte, they must
//    equal the CPU encoder's bytes exactly, although the CPU sums its float32 dots in another order.
//  * attend: qjl_split's logit (per-group q_out/q_in, per-byte masked sums, qjl_term) and h1b_split's logit
//    (word-wise XOR/popcount, table) against the CPU layer's scores().
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include <fmt/format.h>

#include "codec_test_util.h"
#include "codecs/sketch/sketch_cpu.h"
#include "codecs/sketch/sketch_math.h"
#include "kvb/core/half.h"
#include "kvb/core/registry.h"

namespace kvb::codecs {
uint64_t qjl_projection_seed(uint64_t seed, int layer_set);  // qjl_entry.cpp
uint64_t h1b_projection_seed(uint64_t seed);                 // h1b_entry.cpp
}  // namespace kvb::codecs

namespace kvb::test {
namespace {

const std::vector<uint8_t>& buffer(const std::vector<NamedBuffer>& bufs, const std::string& name) {
  for (const auto& b : bufs)
    if (b.name == name) return b.bytes;
  ADD_FAILURE() << "no buffer " << name;
  static const std::vector<uint8_t> empty;
  return empty;
}

TEST(SketchDeviceMath, QjlKernelBytesAndLogitsMatchTheCpuPath) {
  namespace sk = codecs::sk;
  const CodecEntry& e = registry().at("qjl");
  for (int d : {64, 96, 128}) {
    SynthOptions o;
    o.tokens = 300;  // 256 quantized keys (2 flushes of 128), 44 in the fp16 buffer
    o.head_dim = d;
    o.seed = 31 + d;
    const SynthLayer L = make_layer(o);
    const Json p = resolve_params(e.info.params, Json{{"m", 136}, {"m_outlier", 72}, {"outliers", 5}}, "qjl");
    SCOPED_TRACE(fmt::format("{} on {}", p.dump(), L.describe()));
    const auto enc = e.make_cpu(p, L.shape)->encode(0, L.kv, nullptr, L.ctx());
    const auto bufs = enc->buffers();
    const auto& bin = buffer(bufs, "k.inlier_bits");
    const auto& bout = buffer(bufs, "k.outlier_bits");
    const auto& idxb = buffer(bufs, "k.outlier_idx");
    const auto& nb = buffer(bufs, "k.norms");
    const auto P = sk::make_projection(codecs::qjl_projection_seed(L.ctx().seed, 1), 136, d, true);
    const int m = 136, mo = 72, no = 5, G = 32, mb = m / 8, ob = mo / 8;
    const int64_t Cq = 256, ng = Cq / G;
    int64_t mismatches = 0;
    std::vector<float> s_cpu(o.tokens);
    Scratch scratch;
    for (int g = 0; g < L.kv.kv_heads; ++g) {
      const float* K = L.kv.k_head(g);
      for (int64_t b = 0; b < ng; ++b) {
        std::vector<int> idx(no);
        std::vector<uint8_t> is_out(d, 0);
        for (int a = 0; a < no; ++a) {
          idx[a] = sk::read_outlier_index(idxb.data() + (g * ng + b) * no, a, 1);
          is_out[idx[a]] = 1;
        }
        for (int t = 0; t < G; ++t) {
          const int64_t row = g * Cq + b * G + t;
          const float* x = K + (b * G + t) * d;
          const double ni = std::sqrt(sk::norm2_f64(x, d, is_out.data(), 0));
          const double nout = std::sqrt(sk::norm2_f64(x, d, is_out.data(), 1));
          for (int B = 0; B < mb; ++B)
            mismatches += sk::dense_sign_byte(P.s32.data(), P.s64.data(), P.row_norm.data(), d, B, x, is_out.data(), ni) !=
                          bin[row * mb + B];
          for (int B = 0; B < ob; ++B)
            mismatches += sk::sparse_sign_byte(P.s32.data(), P.s64.data(), P.row_norm.data(), d, B, x, idx.data(), no,
                                               nout) != bout[row * ob + B];
        }
      }
      // qjl_split's logits for one query of this head.
      const float* q = L.query(g, 0);
      enc->scores(g, q, s_cpu.data(), scratch);
      std::vector<float> qsk(m), qo(m), qin(m);
      for (int i = 0; i < m; ++i) {
        float z = 0.f;
        for (int c = 0; c < d; ++c) z += q[c] * P.t32[static_cast<size_t>(c) * m + i];
        qsk[i] = z;
      }
      double worst = 0, mx = 0;
      for (int64_t b = 0; b < ng; ++b) {
        float tin = 0.f, tout = 0.f;
        for (int i = 0; i < m; ++i) {
          float acc = 0.f;
          for (int a = 0; a < no; ++a) {
            const int c = sk::read_outlier_index(idxb.data() + (g * ng + b) * no, a, 1);
            acc += q[c] * P.t32[static_cast<size_t>(c) * m + i];
          }
          qo[i] = acc;
          tin += (qin[i] = qsk[i] - acc);
          if (i < mo) tout += acc;
        }
        for (int t = 0; t < G; ++t) {
          const int64_t row = g * Cq + b * G + t;
          float ms_in = 0.f, ms_out = 0.f;
          for (int B = 0; B < mb; ++B) ms_in += sk::masked_sum(bin.data() + row * mb + B, qin.data() + 8 * B, 8);
          for (int B = 0; B < ob; ++B) ms_out += sk::masked_sum(bout.data() + row * ob + B, qo.data() + 8 * B, 8);
          const uint16_t* n = reinterpret_cast<const uint16_t*>(nb.data()) + 2 * row;
          const float e2 = sk::qjl_term(ms_in, tin, f16_to_f32(n[0]), m) + sk::qjl_term(ms_out, tout, f16_to_f32(n[1]), mo);
          const float logit = L.attn.softmax_scale * e2;
          worst = std::max(worst, std::fabs(static_cast<double>(logit) - s_cpu[b * G + t]));
          mx = std::max(mx, std::fabs(static_cast<double>(s_cpu[b * G + t])));
        }
      }
      // Same bits and norms; float32 sums of m + d terms in other orders: kSelftestScoreTol's form
      // err / (1 + max|ŝ|) <= 1e-4, the bound the GPU parity check applies.
      EXPECT_LE(worst / (1.0 + mx), 1e-4) << "head " << g;
    }
    EXPECT_EQ(mismatches, 0) << "sign bytes differing from the CPU encoder";
  }
}

TEST(SketchDeviceMath, H1bKernelBytesAndLogitsMatchTheCpuPath) {
  namespace sk = codecs::sk;
  const CodecEntry& e = registry().at("h1b");
  for (int bits : {64, 200, 256}) {
    SynthOptions o;
    o.tokens = 257;
    o.head_dim = 96;
    o.seed = 7 + bits;
    const SynthLayer L = make_layer(o);
    const Json p = resolve_params(e.info.params, Json{{"sketch_bits", bits}}, "h1b");
    SCOPED_TRACE(fmt::format("{} on {}", p.dump(), L.describe()));
    const auto enc = e.make_cpu(p, L.shape)->encode(0, L.kv, nullptr, L.ctx());
    const auto bufs = enc->buffers();
    const auto& skb = buffer(bufs, "k.sketch");
    const auto& nb = buffer(bufs, "k.norms");
    const auto P = sk::make_projection(codecs::h1b_projection_seed(L.ctx().seed), bits, 96, false);
    const int nbytes = bits / 8;
    int64_t mismatches = 0;
    std::vector<float> s_cpu(o.tokens);
    Scratch scratch;
    for (int g = 0; g < L.kv.kv_heads; ++g) {
      for (int64_t t = 0; t < o.tokens; ++t) {
        const float* x = L.kv.k_head(g) + t * 96;
        const double n = std::sqrt(sk::norm2_f64(x, 96, nullptr, 0));
        for (int B = 0; B < nbytes; ++B)
          mismatches += sk::dense_sign_byte(P.s32.data(), P.s64.data(), P.row_norm.data(), 96, B, x, nullptr, n) !=
                        skb[(g * o.tokens + t) * nbytes + B];
      }
      const float* q = L.query(g, 0);
      enc->scores(g, q, s_cpu.data(), scratch);
      const double qn = std::sqrt(sk::norm2_f64(q, 96, nullptr, 0));
      std::vector<uint8_t> qs(nbytes);
      for (int B = 0; B < nbytes; ++B)
        qs[B] = sk::dense_sign_byte(P.s32.data(), P.s64.data(), P.row_norm.data(), 96, B, q, nullptr, qn);
      const float coef = static_cast<float>(static_cast<double>(L.attn.softmax_scale) * qn);
      for (int64_t t = 0; t < o.tokens; ++t) {
        const uint8_t* r = skb.data() + (g * o.tokens + t) * nbytes;
        int h = 0;  // h1b_split: 64-bit words, then the tail bytes
        for (int w = 0; w < nbytes / 8; ++w) h += sk::popc64(sk::load_word(qs.data() + 8 * w) ^ sk::load_word(r + 8 * w));
        for (int B = (nbytes / 8) * 8; B < nbytes; ++B) h += sk::popc64(static_cast<uint64_t>(qs[B] ^ r[B]));
        const float tab = static_cast<float>(std::cos(sk::kPi * h / bits));
        const float logit = coef * f16_to_f32(reinterpret_cast<const uint16_t*>(nb.data())[g * o.tokens + t]) * tab;
        ASSERT_EQ(logit, s_cpu[t]) << "token " << t;  // same bits, same table, same float products
      }
    }
    EXPECT_EQ(mismatches, 0) << "sign bytes differing from the CPU encoder";
  }
}

}  // namespace
}  // namespace kvb::test
