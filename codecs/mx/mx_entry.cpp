#include "codecs/common/baseline.h"
#include "codecs/mx/mx_codec.h"

namespace kvb::codecs {

std::string mx_name(kernels::mx::Kind k) {
  switch (k) {
    case kernels::mx::Kind::kNvfp4: return "nvfp4";
    case kernels::mx::Kind::kMxfp4: return "mxfp4";
    default: return "mxfp8";
  }
}

std::string MxParams::label() const { return mx_name(kind); }

int64_t mx_part_bytes_per_token(kernels::mx::Kind k, int head_dim) {
  return kernels::mx::row_bytes(k, head_dim) + kernels::mx::blocks_per_row(k, head_dim);
}

namespace {

CodecEntry mx_entry(kernels::mx::Kind kind, const char* summary, const char* paper, const char* notes) {
  const std::string name = mx_name(kind);
  CodecEntry e;
  e.info.name = name;
  e.info.family = "float";
  e.info.summary = summary;
  e.info.paper = paper;
  e.info.budget_rule =
      "One configuration: the format's own cost, 8·(row bytes + block scales)/head_dim bits per element (" +
      std::string(kind == kernels::mx::Kind::kNvfp4   ? "4.5 at head_dim 64/128, 4.6 at 40"
                  : kind == kernels::mx::Kind::kMxfp4 ? "4.25 at head_dim 64/128, 4.4 at 40"
                                                      : "8.25 at head_dim 64/128, 8.4 at 40") +
      "; a partial last block costs a whole scale byte); a bits target below it is skipped." +
      (kind == kernels::mx::Kind::kNvfp4 ? " The fp32 per-tensor scales are fixed bytes (bits_with_fixed)." : "");
  e.info.notes = notes;
  e.candidates = [kind](int d) {
    return std::vector<Candidate>{
        {Json::object(), 8.0 * static_cast<double>(mx_part_bytes_per_token(kind, d)) / d}};
  };
  MxParams base;
  base.kind = kind;
  const ParamTable<MxParams> table({});  // the format is the codec; no parameters
  e.label = codec_label(table, name, base);
  e.make_cpu = codec_factory(table, name, [](MxParams p) {
    return std::make_unique<FnCodec<MxParams>>(std::move(p), mx_encode_cpu, "cpu");
  }, base);
  e.make_ref = codec_factory(table, name, [](MxParams p) {
    return std::make_unique<FnCodec<MxParams>>(std::move(p), mx_encode_ref, "ref");
  }, base);
#ifdef KVB_WITH_CUDA
  e.make_cuda = codec_factory(table, name, [](MxParams p) {
    return std::make_unique<FnCodec<MxParams>>(std::move(p), mx_encode_cuda, "cuda");
  }, base);
#endif
  return e;
}

constexpr const char* kBlockNote =
    "blocks run along head_dim; a head_dim that the block does not divide ends with a partial block with its "
    "own scale (counted as a whole byte); FP4 codes packed two per byte, low nibble first (an odd head_dim "
    "pads the last nibble, counted); keys and values both quantized, every token";

}  // namespace

CodecEntry nvfp4_entry() {
  return mx_entry(kernels::mx::Kind::kNvfp4,
                  "NVIDIA NVFP4: E2M1 keys and values, an E4M3 scale per 16 elements and one fp32 scale per "
                  "(KV head, K or V): 4.5 bits",
                  "NVIDIA NVFP4 (Transformer Engine NVFP4 recipe; cuBLAS 1D block scaling VEC16_UE4M3)",
                  (std::string("global = amax_tensor/(448·6); block scale = E4M3(amax_block/6/global); "
                               "elements E2M1(x/(scale·global)), round to nearest even, saturating at ±6; ") +
                   kBlockNote)
                      .c_str());
}

CodecEntry mxfp4_entry() {
  return mx_entry(kernels::mx::Kind::kMxfp4,
                  "OCP MXFP4: E2M1 keys and values with an E8M0 (power-of-two) scale per 32 elements: 4.25 bits",
                  "OCP Microscaling Formats (MX) v1.0 (2023), §5, §6.3",
                  (std::string("X = 2^(floor(log2 amax_block) − 2), clamped at 2^-127; elements E2M1(x/X), round to "
                               "nearest even, saturating at ±6; ") +
                   kBlockNote)
                      .c_str());
}

CodecEntry mxfp8_entry() {
  return mx_entry(kernels::mx::Kind::kMxfp8,
                  "OCP MXFP8 (E4M3): FP8 E4M3 keys and values with an E8M0 scale per 32 elements: 8.25 bits",
                  "OCP Microscaling Formats (MX) v1.0 (2023), §5, §6.3",
                  (std::string("X = 2^(floor(log2 amax_block) − 8), clamped at 2^-127; elements E4M3(x/X), round to "
                               "nearest even, saturating at ±448; ") +
                   kBlockNote)
                      .c_str());
}

}  // namespace kvb::codecs
