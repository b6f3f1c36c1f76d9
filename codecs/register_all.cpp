#include "kvb/core/registry.h"

#include "codecs/baselines.h"
#include "codecs/evict/evict_codec.h"
#include "codecs/kvcar/kvcar_codec.h"
#include "codecs/kvquant/kvquant_codec.h"
#include "codecs/mx/mx_codec.h"
#include "codecs/polar/polar_codec.h"
#include "codecs/pq/lookat_codec.h"
#include "codecs/select/select_codec.h"
#include "codecs/sketch/sketch_entries.h"
#include "codecs/turbo/turbo_codec.h"

namespace kvb {

/// The one list of every codec kvbench knows: one line per codec.
void register_all_codecs(CodecRegistry& r) {
  r.add(codecs::fp16_entry());
  r.add(codecs::fp8_entry());
  r.add(codecs::nvfp4_entry());
  r.add(codecs::mxfp4_entry());
  r.add(codecs::mxfp8_entry());
  r.add(codecs::int_entry());
  r.add(codecs::kivi_entry());
  r.add(codecs::turboquant_entry());
  r.add(codecs::polarquant_entry());
  r.add(codecs::kvquant_entry());
  r.add(codecs::balancekv_entry());
  r.add(codecs::uniform_entry());
  r.add(codecs::streamingllm_entry());
  r.add(codecs::h2o_entry());
  r.add(codecs::snapkv_entry());
  r.add(codecs::pyramidkv_entry());
  r.add(codecs::adakv_entry());
  r.add(codecs::lookat_entry());
  r.add(codecs::qjl_entry());
  r.add(codecs::h1b_entry());
  r.add(codecs::kvcar_entry());
}

/// The process-wide registry (declared in kvb/core/registry.h), defined beside the list so that the core
/// library has no link-time dependency on the codecs.
const CodecRegistry& registry() {
  static const CodecRegistry r = [] {
    CodecRegistry reg;
    register_all_codecs(reg);
    return reg;
  }();
  return r;
}

}  // namespace kvb
