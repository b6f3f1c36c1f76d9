#include "codecs/baselines.h"
#include "codecs/common/baseline.h"
#include "codecs/common/rotation.h"
#include "codecs/quant/int_codec.h"

namespace kvb::codecs {

CodecEntry int_entry() {
  CodecEntry e;
  e.info.name = "int";
  e.info.family = "scalar_quantization";
  e.info.summary = "per-token asymmetric INTn of K and V in channel groups with fp16 scale and min (RTN baseline)";
  e.info.paper = "baseline";
  e.info.budget_rule =
      "b_eff = code_bits + 32/group_size (K and V alike, no fp16 window); candidates code_bits 1..8 x "
      "group_size 32, 64, 128 (those dividing head_dim, else head_dim itself), so bits 3, 5, 9 give "
      "int2, int4, int8 with 32-channel groups.";
  const ParamTable<IntParams> table({
      bind(ParamSpec::Int("code_bits", 4, 1, 8, "bits per code"), &IntParams::code_bits),
      bind(ParamSpec::Int("group_size", 32, 1, 4096, "channels per (fp16 scale, fp16 min) group; must divide head_dim"),
           &IntParams::group_size),
      bind(rotate_param(), &IntParams::rotate),
  });
  e.info.params = table.specs();
  e.info.notes =
      "asymmetric min-max for every width (INT8 too, not symmetric absmax); codes round half up against the "
      "fp16-rounded scale and min, which are the values dequantization uses" +
      std::string(kRotateNote);
  e.candidates = [](int head_dim) {
    std::vector<int> groups;
    for (int g : {32, 64, 128})
      if (head_dim % g == 0) groups.push_back(g);
    if (groups.empty()) groups.push_back(head_dim);
    std::vector<Candidate> out;
    for (int b = 1; b <= 8; ++b)
      for (int g : groups) {
        const IntParams p{b, g};
        out.push_back({Json{{"code_bits", b}, {"group_size", g}}, 8.0 * p.bytes_per_token(head_dim) / (2.0 * head_dim)});
      }
    return out;
  };
  e.selftest_variants.clear();
  for (int b : {2, 3, 4, 8}) e.selftest_variants.push_back(Json{{"code_bits", b}, {"group_size", 32}});
  e.selftest_variants.push_back(Json{{"code_bits", 3}, {"group_size", 32}, {"rotate", "hadamard"}});
  e.label = codec_label(table, "int");
  e.make_cpu = fn_factory(table, "int", rotating<IntParams, int_encode_cpu, false>, "cpu");
  e.make_ref = fn_factory(table, "int", rotating<IntParams, int_encode_ref, true>, "ref");
#ifdef KVB_WITH_CUDA
  e.make_cuda = fn_factory(table, "int", rotating<IntParams, int_encode_cuda, false>, "cuda");
#endif
  return e;
}

}  // namespace kvb::codecs
