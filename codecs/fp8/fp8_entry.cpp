#include "codecs/baselines.h"
#include "codecs/common/baseline.h"
#include "codecs/fp8/fp8_codec.h"

namespace kvb::codecs {

CodecEntry fp8_entry() {
  CodecEntry e;
  e.info.name = "fp8";
  e.info.family = "float";
  e.info.summary = "OCP FP8 (E4M3FN or E5M2) keys and values with one fp32 absmax scale per KV head";
  e.info.paper = "baseline";
  e.info.budget_rule =
      "Both formats cost 8 bits per element (+ two fp32 scales per KV head, reported as fixed bytes); "
      "a target of 8 or more picks e4m3, the usual KV-cache format.";
  const ParamTable<Fp8Params> table({bind_choice(
      ParamSpec::Choice("format", "e4m3", {"e4m3", "e5m2"},
                        "e4m3: 3 mantissa bits, max 448; e5m2: 2 mantissa bits, max 57344"),
      &Fp8Params::format, {{"e4m3", kernels::fp8::Format::kE4M3}, {"e5m2", kernels::fp8::Format::kE5M2}})});
  e.info.params = table.specs();
  e.info.notes =
      "round to nearest even; overflow saturates to ±max finite in both formats (E5M2 never produces Inf); "
      "scale = absmax/max_finite per (KV head, K or V) from the encoded cache";
  e.candidates = [](int) {
    return std::vector<Candidate>{{Json{{"format", "e4m3"}}, 8.0}, {Json{{"format", "e5m2"}}, 8.0}};
  };
  e.selftest_variants = {Json{{"format", "e4m3"}}, Json{{"format", "e5m2"}}};
  e.label = codec_label(table, "fp8");
  e.make_cpu = fn_factory(table, "fp8", fp8_encode_cpu, "cpu");
  e.make_ref = fn_factory(table, "fp8", fp8_encode_ref, "ref");
#ifdef KVB_WITH_CUDA
  e.make_cuda = fn_factory(table, "fp8", fp8_encode_cuda, "cuda");
#endif
  return e;
}

}  // namespace kvb::codecs
