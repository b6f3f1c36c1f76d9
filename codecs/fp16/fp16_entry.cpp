#include "codecs/baselines.h"
#include "codecs/common/baseline.h"
#include "codecs/fp16/fp16_codec.h"

namespace kvb::codecs {

CodecEntry fp16_entry() {
  CodecEntry e;
  e.info.name = "fp16";
  e.info.family = "float";
  e.info.summary = "float16 cache with exact attention (the uncompressed reference, 16 bits per element)";
  e.info.paper = "baseline";
  e.info.budget_rule = "One configuration at 16 bits per element; a bits target below 16 is skipped.";
  e.info.notes = "values beyond ±65504 (possible in bf16/fp32 dumps) are stored as ±65504, never Inf";
  e.candidates = [](int) { return std::vector<Candidate>{{Json::object(), 16.0}}; };
  const ParamTable<Fp16Params> table({});  // no parameters
  e.label = codec_label(table, "fp16");
  e.make_cpu = fn_factory(table, "fp16", fp16_encode_cpu, "cpu");
  e.make_ref = fn_factory(table, "fp16", fp16_encode_ref, "ref");
#ifdef KVB_WITH_CUDA
  e.make_cuda = fn_factory(table, "fp16", fp16_encode_cuda, "cuda");
#endif
  return e;
}

}  // namespace kvb::codecs
