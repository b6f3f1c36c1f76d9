#include <numeric>

#include "codecs/baselines.h"
#include "codecs/common/baseline.h"
#include "codecs/common/rotation.h"
#include "codecs/quant/kivi_codec.h"

namespace kvb::codecs {

CodecEntry kivi_entry() {
  CodecEntry e;
  e.info.name = "kivi";
  e.info.family = "scalar_quantization";
  e.info.summary =
      "KIVI: keys quantized per channel over G-token blocks, values per token, recent tokens kept in fp16";
  e.info.paper = "KIVI, arXiv 2402.02750";
  e.info.budget_rule =
      "b_eff of the quantized region = code_bits + 32/group_size (fp16 key residual and value window are "
      "reported as buffer bytes); candidates code_bits 1, 2, 3, 4, 8 with the paper's G=32, R=128 "
      "(G = gcd(head_dim, 32) when 32 does not divide head_dim).";
  const ParamTable<KiviParams> table({
      bind(ParamSpec::Int("code_bits", 2, 1, 8, "bits per code (the paper uses 2 and 4)"), &KiviParams::code_bits),
      bind(ParamSpec::Int("group_size", 32, 1, 4096,
                          "G: tokens per key block (per-channel scale, min) and channels per value group; must divide "
                          "head_dim"),
           &KiviParams::group_size),
      bind(ParamSpec::Int("residual", 128, 1, 1 << 20,
                          "R: fp16 key residual capacity (flushed when full) and value window, in tokens; a "
                          "multiple of group_size"),
           &KiviParams::residual),
      bind(rotate_param(), &KiviParams::rotate),
  });
  e.info.params = table.specs();
  e.info.presets = {
      {"paper-2", Json{{"code_bits", 2}, {"group_size", 32}, {"residual", 128}}},
      {"paper-4", Json{{"code_bits", 4}, {"group_size", 32}, {"residual", 128}}},
  };
  e.info.notes =
      "keys: the first C - (C mod R) tokens quantized, the last C mod R in fp16 (flush-when-full); values: the "
      "last min(R, C) tokens in fp16 (sliding window); fp16 scale and min, codes round half up" +
      std::string(kRotateNote);
  e.candidates = [](int head_dim) {
    const int G = head_dim % 32 == 0 ? 32 : std::gcd(head_dim, 32);
    std::vector<Candidate> out;
    for (int b : {1, 2, 3, 4, 8}) {
      const KiviParams p{b, G, 128};
      out.push_back({Json{{"code_bits", b}, {"group_size", G}, {"residual", 128}},
                     8.0 * p.bytes_per_token(head_dim) / (2.0 * head_dim)});
    }
    return out;
  };
  e.selftest_variants = {Json{{"code_bits", 2}, {"group_size", 32}, {"residual", 128}},
                         Json{{"code_bits", 4}, {"group_size", 32}, {"residual", 32}},
                         Json{{"code_bits", 2}, {"group_size", 32}, {"residual", 32}, {"rotate", "hadamard"}}};
  e.label = codec_label(table, "kivi");
  e.make_cpu = fn_factory(table, "kivi", rotating<KiviParams, kivi_encode_cpu, false>, "cpu");
  e.make_ref = fn_factory(table, "kivi", rotating<KiviParams, kivi_encode_ref, true>, "ref");
#ifdef KVB_WITH_CUDA
  e.make_cuda = fn_factory(table, "kivi", rotating<KiviParams, kivi_encode_cuda, false>, "cuda");
#endif
  return e;
}

}  // namespace kvb::codecs
