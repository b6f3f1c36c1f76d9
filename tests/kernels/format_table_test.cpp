// kernels/: the format-traits table (kernels/cuda/formats.h) and the bit-width dispatch (kernels/cpu/uniform_rows.h).
// The table is what the device layer sizes, encodes and loads through, so each entry is checked against the
// format's own math (kernels/formats/) on the host: buffer sizes against the layout formulas, load() against a
// direct decode of codes written by the CPU encoders.
#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kernels/cpu/uniform_rows.h"
#include "kernels/cuda/layer_view.h"
#include "kernels/formats/fp8.h"
#include "kernels/formats/mx.h"
#include "kernels/formats/uniform.h"
#include "kvb/core/error.h"
#include "kvb/core/half.h"
#include "kvb/core/rng.h"

namespace kvb::test {
namespace {

namespace gpu = kernels::gpu;
namespace uq = kernels::uq;
namespace fp8 = kernels::fp8;

template <class... Fs>
std::vector<gpu::Fmt> ids(gpu::FormatList<Fs...>) {
  return {Fs::kId...};
}

std::string name_of(gpu::Fmt f) {
  std::string name = "?";
  gpu::visit_format(f, [&](auto t) { name = decltype(t)::kName; });
  return name;
}

TEST(FormatTable, EveryEntryIsFoundByItsIdAndNamedOnce) {
  const std::vector<gpu::Fmt> all = ids(gpu::Formats{});
  ASSERT_EQ(all.size(), 8u);
  std::set<std::string> names;
  for (const gpu::Fmt f : all) {
    int calls = 0;
    gpu::Fmt seen{};
    EXPECT_TRUE(gpu::visit_format(f, [&](auto t) {
      ++calls;
      seen = decltype(t)::kId;
    }));
    EXPECT_EQ(calls, 1) << "format id " << static_cast<int>(f);
    EXPECT_EQ(seen, f);
    EXPECT_TRUE(names.insert(name_of(f)).second) << "duplicate name " << name_of(f);
  }
  int calls = 0;
  EXPECT_FALSE(gpu::visit_format(static_cast<gpu::Fmt>(99), [&](auto) { ++calls; }));
  EXPECT_EQ(calls, 0);
}

TEST(FormatTable, BufferSizesFollowTheLayouts) {
  // heads H, quantized tokens q, head_dim d, bits b, group G (odd sizes on purpose: 7 tokens, d = 96, 3 bits)
  const int64_t H = 3, q = 7;
  const int d = 96, b = 3, G = 32;
  const gpu::PartBytes f16 = gpu::F16Rows::bytes(H, q, d, b, G);
  EXPECT_EQ(f16.codes + f16.sm + f16.scale, 0);
  const gpu::PartBytes e4 = gpu::Fp8Codes<fp8::Format::kE4M3>::bytes(H, q, d, b, G);
  EXPECT_EQ(e4.codes, H * q * d);
  EXPECT_EQ(e4.sm, 0);
  EXPECT_EQ(e4.scale, H * 4);
  const gpu::PartBytes tq = gpu::TokenQuant::bytes(H, q, d, b, G);
  EXPECT_EQ(tq.codes, H * q * ((d * b + 7) / 8));
  EXPECT_EQ(tq.sm, H * q * (d / G) * 4);
  EXPECT_EQ(tq.scale, 0);
  const gpu::PartBytes cq = gpu::ChannelQuant::bytes(H, 64, d, b, G);
  EXPECT_EQ(cq.codes, H * 64 * ((d * b + 7) / 8));
  EXPECT_EQ(cq.sm, H * (64 / G) * d * 4);
  // microscaling at d = 96 (a multiple of both block sizes) and d = 40 (partial last blocks)
  for (const int dd : {96, 40}) {
    const gpu::PartBytes nv = gpu::MxBlocks<kernels::mx::Kind::kNvfp4>::bytes(H, q, dd, b, G);
    EXPECT_EQ(nv.codes, H * q * (dd / 2));
    EXPECT_EQ(nv.block_scale, H * q * ((dd + 15) / 16));
    EXPECT_EQ(nv.scale, H * 4);
    EXPECT_EQ(nv.sm, 0);
    const gpu::PartBytes m4 = gpu::MxBlocks<kernels::mx::Kind::kMxfp4>::bytes(H, q, dd, b, G);
    EXPECT_EQ(m4.codes, H * q * (dd / 2));
    EXPECT_EQ(m4.block_scale, H * q * ((dd + 31) / 32));
    EXPECT_EQ(m4.scale, 0);
    const gpu::PartBytes m8 = gpu::MxBlocks<kernels::mx::Kind::kMxfp8>::bytes(H, q, dd, b, G);
    EXPECT_EQ(m8.codes, H * q * dd);
    EXPECT_EQ(m8.block_scale, H * q * ((dd + 31) / 32));
  }
}

// Random rows x [H][C][d] with a seed; the config is printed on failure through SCOPED_TRACE.
std::vector<float> random_rows(int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = static_cast<float>(rng.normal()) * 2.f;
  return x;
}

TEST(FormatTable, LoadEqualsTheFormatsOwnDecode) {
  const int H = 2, d = 96;
  const int64_t C = 7;
  const uint64_t seed = 11;
  SCOPED_TRACE(fmt::format("H={} C={} d={} seed={}", H, C, d, seed));
  const std::vector<float> x = random_rows(H * C * d, seed);

  // fp8 (both formats): codes of x / scale, one scale per head.
  for (const fp8::Format F : {fp8::Format::kE4M3, fp8::Format::kE5M2}) {
    std::vector<uint8_t> codes(static_cast<size_t>(H * C * d));
    std::vector<float> scale(H);
    for (int g = 0; g < H; ++g) {
      float amax = 0.f;
      for (int64_t i = 0; i < C * d; ++i) amax = std::max(amax, std::fabs(x[g * C * d + i]));
      scale[g] = fp8::head_scale(amax, F);
      for (int64_t i = 0; i < C * d; ++i) codes[g * C * d + i] = fp8::encode(F, x[g * C * d + i] / scale[g]);
    }
    gpu::Part p;
    p.fmt = F == fp8::Format::kE4M3 ? gpu::Fmt::kFp8E4M3 : gpu::Fmt::kFp8E5M2;
    p.q_tokens = C;
    p.codes = codes.data();
    p.head_scale = scale.data();
    for (int g = 0; g < H; ++g)
      for (int64_t t = 0; t < C; ++t)
        for (int j = 0; j < d; ++j) {
          const float want = fp8::decode(F, codes[(g * C + t) * d + j]) * scale[g];
          ASSERT_EQ(gpu::load(p, C, d, g, t, j), want) << name_of(p.fmt) << " g=" << g << " t=" << t;
        }
  }

  // token quant at every width, through the CPU encoder (uq::encode_rows writes the layout the table reads).
  for (int bits = 1; bits <= 8; ++bits) {
    const uq::RowFormat f{d, bits, 32};
    std::vector<uint8_t> codes(static_cast<size_t>(H * C * f.bytes()));
    std::vector<uq::GroupParams> sm(static_cast<size_t>(H * C * f.groups()));
    uq::encode_rows(f, x.data(), H * C, codes.data(), sm.data());
    gpu::Part p;
    p.fmt = gpu::Fmt::kTokenQuant;
    p.bits = bits, p.group = 32, p.q_tokens = C;
    p.codes = codes.data();
    p.sm = sm.data();
    for (int g = 0; g < H; ++g)
      for (int64_t t = 0; t < C; ++t)
        for (int j = 0; j < d; ++j) {
          const int64_t r = g * C + t;
          const uq::GroupParams s = sm[r * f.groups() + j / 32];
          const float want = uq::dequantize(static_cast<float>(uq::unpack_code(&codes[r * f.bytes()], j, bits)),
                                            f16_to_f32(s.scale), f16_to_f32(s.min));
          ASSERT_EQ(gpu::load(p, C, d, g, t, j), want) << "bits=" << bits << " g=" << g << " t=" << t << " j=" << j;
        }
  }
}

TEST(FormatTable, MicroscalingLoadEqualsTheFormatsOwnDecode) {
  // Rows encoded by mx.h's encode_row (the CPU encoder's function), loaded through the table, against a
  // direct decode: element value (E2M1 nibble or E4M3 byte) × block scale (E4M3 or E8M0) × nvfp4's head scale.
  namespace mx = kernels::mx;
  const int H = 2;
  const int64_t C = 5;
  for (const int d : {96, 40})
    for (const mx::Kind k : {mx::Kind::kNvfp4, mx::Kind::kMxfp4, mx::Kind::kMxfp8}) {
      const uint64_t seed = 13 + d;
      SCOPED_TRACE(fmt::format("kind={} H={} C={} d={} seed={}", static_cast<int>(k), H, C, d, seed));
      const std::vector<float> x = random_rows(H * C * d, seed);
      const int rb = mx::row_bytes(k, d), nb = mx::blocks_per_row(k, d);
      std::vector<uint8_t> codes(static_cast<size_t>(H * C * rb)), scales(static_cast<size_t>(H * C * nb));
      std::vector<float> global(H, 1.f);
      for (int g = 0; g < H; ++g) {
        float amax = 0.f;
        for (int64_t i = 0; i < C * d; ++i) amax = std::max(amax, std::fabs(x[g * C * d + i]));
        if (k == mx::Kind::kNvfp4) global[g] = mx::nvfp4_global_scale(amax);
        for (int64_t t = 0; t < C; ++t)
          mx::encode_row(k, &x[(g * C + t) * d], d, global[g], &codes[(g * C + t) * rb], &scales[(g * C + t) * nb]);
      }
      gpu::Part p;
      p.fmt = k == mx::Kind::kNvfp4 ? gpu::Fmt::kNvfp4 : k == mx::Kind::kMxfp4 ? gpu::Fmt::kMxfp4 : gpu::Fmt::kMxfp8;
      p.q_tokens = C;
      p.codes = codes.data();
      p.block_scale = scales.data();
      p.head_scale = global.data();
      const int B = mx::block_size(k);
      for (int g = 0; g < H; ++g)
        for (int64_t t = 0; t < C; ++t)
          for (int j = 0; j < d; ++j) {
            const int64_t r = g * C + t;
            const uint8_t c = mx::is_fp4(k) ? static_cast<uint8_t>((codes[r * rb + j / 2] >> (4 * (j % 2))) & 0xf)
                                            : codes[r * rb + j];
            const uint8_t sc = scales[r * nb + j / B];
            const float elem = mx::is_fp4(k) ? mx::decode_e2m1(c) : fp8::decode_e4m3(c);
            const float scale = k == mx::Kind::kNvfp4 ? fp8::decode_e4m3(sc) : mx::decode_e8m0(sc);
            const float want = k == mx::Kind::kNvfp4 ? elem * scale * global[g] : elem * scale;
            ASSERT_EQ(gpu::load(p, C, d, g, t, j), want) << name_of(p.fmt) << " g=" << g << " t=" << t << " j=" << j;
          }
    }
}

TEST(FormatTable, RowsPastTheQuantizedRangeAreTheFp16Tail) {
  const int d = 8;
  const int64_t C = 5, q = 0;  // a part with no quantized range: every row is the tail
  std::vector<uint16_t> tail(static_cast<size_t>(2 * C * d));
  for (size_t i = 0; i < tail.size(); ++i) tail[i] = f32_to_f16(static_cast<float>(i) * 0.25f - 3.f);
  gpu::Part p;
  p.q_tokens = q;
  p.tail = tail.data();
  for (int g = 0; g < 2; ++g)
    for (int64_t t = 0; t < C; ++t)
      for (int j = 0; j < d; ++j) EXPECT_EQ(gpu::load(p, C, d, g, t, j), f16_to_f32(tail[(g * C + t) * d + j]));
}

TEST(BitDispatch, EveryWidthReachesItsOwnInstantiationAndNoneFallsThrough) {
  for (int bits = 1; bits <= 8; ++bits)
    EXPECT_EQ(uq::dispatch_bits(bits, [](auto b) { return decltype(b)::value; }), bits);
  for (const int bad : {0, 9, -1, 16}) {
    try {
      uq::dispatch_bits(bad, [](auto b) { return decltype(b)::value; });
      ADD_FAILURE() << "width " << bad << " was dispatched";
    } catch (const RuntimeError& e) {
      EXPECT_NE(std::string(e.what()).find(std::to_string(bad)), std::string::npos) << e.what();
    }
  }
  // The statement form used by the hot loops (KVB_DISPATCH_BITS) refuses the same widths.
  std::vector<uint8_t> row(16);
  const std::vector<uint32_t> codes(8, 1u);
  EXPECT_THROW(uq::pack_row(codes.data(), 8, 9, row.data()), RuntimeError);
  const uq::RowFormat f{8, 9, 8};
  std::vector<uq::GroupParams> sm(1);
  const std::vector<float> x(8, 1.f);
  EXPECT_THROW(uq::encode_rows(f, x.data(), 1, row.data(), sm.data()), RuntimeError);
}

}  // namespace
}  // namespace kvb::test
