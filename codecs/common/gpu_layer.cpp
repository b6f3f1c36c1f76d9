// Device-resident baseline layers (see gpu_layer.h). Compiled only with the CUDA backend.
#ifdef KVB_WITH_CUDA
#include "codecs/common/gpu_layer.h"

#include <algorithm>
#include <string>
#include <vector>

#include "codecs/common/baseline.h"
#include "kernels/cuda/launch.h"
#include "kvb/core/error.h"
#include "kvb/cuda/runtime.h"

namespace kvb::codecs::gpu {

bool DeviceLayer::scores(int g, const float* q, float* s_out, Scratch&) const {
  kernels::gpu::scores_device(device_attend(), g, q, s_out);
  return true;
}
void DeviceLayer::attend(int g, const float* q, float* o_out, Scratch&) const {
  kernels::gpu::attend_device(device_attend(), g, &q, 1, o_out, nullptr);
}
void DeviceLayer::attend_many(int g, const float* const* qs, int nq, float* const* outs, Scratch&) const {
  kernels::gpu::attend_many_device(device_attend(), g, qs, nq, outs);
}
bool DeviceLayer::device_timing(const LayerKV& kv, const LayerQueries& q, int min_repeats, double min_time_s,
                                DeviceTimes* out) const {
  kernels::gpu::time_encode_device(
      kv, [&](const float* k, const float* v, cudaStream_t st) { run_encode(k, v, st); }, min_repeats, min_time_s, out);
  kernels::gpu::time_attend_device(device_attend(), kv_heads_, q, min_repeats, min_time_s, out);
  return true;
}

using namespace kvb::kernels::gpu;  // the formats, layer view and device primitives of kernels/cuda
namespace {

using cuda::check;
using cuda::DeviceBuffer;

/// The device buffers of one part (K or V), sized as the CPU layer's vectors.
struct PartBuffers {
  DeviceBuffer codes, sm, scale, tail, block_scale;
};

class GpuLayer final : public EncodedLayer {
 public:
  GpuLayer(const LayerSpec& spec, const LayerKV& kv, const CodecContext& ctx)
      : spec_(spec), heads_(kv.kv_heads), C_(kv.tokens), d_(kv.head_dim), attn_(ctx.attn) {
    cuda::require_device();
    alloc(spec_.k, kb_);
    alloc(spec_.v, vb_);
    view_.heads = heads_;
    view_.C = C_;
    view_.d = d_;
    view_.k = part_view(spec_.k, kb_);
    view_.v = part_view(spec_.v, vb_);
    const cudaStream_t s = cuda::run_stream();
    const DeviceBuffer dk = DeviceBuffer::from(kv.k), dv = DeviceBuffer::from(kv.v);
    run_encode(dk.as<float>(), dv.as<float>(), s);
    check(cudaStreamSynchronize(s), "baseline encode kernels");
  }

  int64_t tokens() const override { return C_; }

  Storage storage() const override {
    StorageList st(heads_, spec_.nominal_bytes_per_token);
    add_items(st, spec_.k, kb_);
    add_items(st, spec_.v, vb_);
    return st.get();
  }

  std::vector<NamedBuffer> buffers() const override {
    std::vector<NamedBuffer> out;
    for (const auto& [ps, pb] : {std::pair{&spec_.k, &kb_}, std::pair{&spec_.v, &vb_}}) {
      if (!ps->codes_name.empty()) out.push_back({ps->codes_name, pb->codes.to_host()});
      if (!ps->block_scale_name.empty()) out.push_back({ps->block_scale_name, pb->block_scale.to_host()});
      if (!ps->sm_name.empty()) out.push_back({ps->sm_name, pb->sm.to_host()});
      if (!ps->scale_name.empty()) out.push_back({ps->scale_name, pb->scale.to_host()});
      if (!ps->tail_name.empty()) out.push_back({ps->tail_name, pb->tail.to_host()});
    }
    return out;
  }

  bool scores(int g, const float* q, float* s_out, Scratch&) const override {
    scores_device(baseline_attend(view_, attn_), g, q, s_out);
    return true;
  }
  void attend(int g, const float* q, float* o_out, Scratch&) const override {
    attend_device(baseline_attend(view_, attn_), g, &q, 1, o_out, nullptr);
  }
  void attend_many(int g, const float* const* qs, int nq, float* const* outs, Scratch&) const override {
    attend_many_device(baseline_attend(view_, attn_), g, qs, nq, outs);
  }

  bool device_timing(const LayerKV& kv, const LayerQueries& q, int min_repeats, double min_time_s,
                     DeviceTimes* out) const override {
    time_encode_device(
        kv, [&](const float* k, const float* v, cudaStream_t st) { run_encode(k, v, st); }, min_repeats, min_time_s,
        out);
    time_attend_device(baseline_attend(view_, attn_), heads_, q, min_repeats, min_time_s, out);
    return true;
  }

 private:

  /// The part's buffers, sized by its format's traits (formats.h) and its fp16 tail.
  void alloc(const PartSpec& p, PartBuffers& b) const {
    const int64_t q = p.q_tokens, tail = C_ - p.q_tokens;
    PartBytes n;
    KVB_CHECK(visit_format(p.fmt, [&](auto f) { n = decltype(f)::bytes(heads_, q, d_, p.bits, p.group); }), RuntimeError,
              "device layer: format id {} is not in the format table", static_cast<int>(p.fmt));
    b.codes.alloc(static_cast<size_t>(n.codes));
    b.sm.alloc(static_cast<size_t>(n.sm));
    b.scale.alloc(static_cast<size_t>(n.scale));
    b.block_scale.alloc(static_cast<size_t>(n.block_scale));
    b.tail.alloc(static_cast<size_t>(static_cast<int64_t>(heads_) * tail * d_) * sizeof(uint16_t));
    // Zero-filled packed rows: the bit-stream writer stores whole bytes, but a zero start keeps buffers()
    // deterministic for empty ranges too. On the run stream: it is non-blocking, so a memset on the legacy
    // default stream would not be ordered before the encode kernels.
    b.codes.zero(cuda::run_stream());
  }

  static Part part_view(const PartSpec& p, const PartBuffers& b) {
    Part v;
    v.fmt = p.fmt;
    v.bits = p.bits;
    v.group = p.group;
    v.q_tokens = p.q_tokens;
    v.codes = b.codes.as<uint8_t>();
    v.sm = b.sm.as<kernels::uq::GroupParams>();
    v.head_scale = b.scale.as<float>();
    v.block_scale = b.block_scale.as<uint8_t>();
    v.tail = b.tail.as<uint16_t>();
    return v;
  }

  /// The part's format range through its traits' encode kernel, then the fp16 tail of each head.
  void encode_part(const PartSpec& p, const PartBuffers& b, const float* x, cudaStream_t s) const {
    const int64_t q = p.q_tokens;
    EncodeTarget t;
    t.bits = p.bits, t.group = p.group, t.q_tokens = q;
    t.codes = b.codes.as<uint8_t>(), t.sm = b.sm.as<kernels::uq::GroupParams>(), t.head_scale = b.scale.as<float>();
    t.block_scale = b.block_scale.as<uint8_t>();
    visit_format(p.fmt, [&](auto f) {
      const std::string what = std::string(decltype(f)::kName) + " encode kernels";
      check(decltype(f)::encode(x, heads_, C_, d_, t, s), what.c_str());
    });
    check(launch_tail_to_f16(x, heads_, C_, q, d_, b.tail.as<uint16_t>(), s), "fp16 rows kernel");
  }

  void run_encode(const float* dk, const float* dv, cudaStream_t s) const {
    encode_part(spec_.k, kb_, dk, s);
    encode_part(spec_.v, vb_, dv, s);
  }

  void add_items(StorageList& st, const PartSpec& p, const PartBuffers& b) const {
    if (!p.codes_name.empty()) st.add(p.codes_name, StorageKind::kCompressed, b.codes.bytes(), p.q_tokens);
    if (!p.block_scale_name.empty())
      st.add(p.block_scale_name, StorageKind::kCompressed, b.block_scale.bytes(), p.q_tokens);
    if (!p.sm_name.empty()) st.add(p.sm_name, StorageKind::kCompressed, b.sm.bytes(), p.q_tokens);
    if (!p.scale_name.empty()) st.add(p.scale_name, StorageKind::kFixed, b.scale.bytes(), 0);
    if (!p.tail_name.empty()) st.add(p.tail_name, p.tail_kind, b.tail.bytes(), C_ - p.q_tokens);
  }

  LayerSpec spec_;
  int heads_;
  int64_t C_;
  int d_;
  AttnConfig attn_;
  PartBuffers kb_, vb_;
  LayerView view_;
};

}  // namespace

DeviceAttend baseline_attend(const LayerView& L, const AttnConfig& attn) {
  DeviceAttend a;
  a.d = L.d;
  a.C = L.C;
  a.plan = [C = L.C, d = L.d](int nq, int* chunk, int* splits) { return plan_attend(nq, C, d, chunk, splits); };
  a.launch = [L, attn](const QueryLaunch& ql, cudaStream_t st) {
    AttendArgs x;
    x.L = L;
    x.q = ql.q, x.q_head = ql.q_head, x.nq = ql.nq;
    x.softmax_scale = attn.softmax_scale, x.softcap = attn.softcap;
    x.out = ql.out, x.logits = ql.logits, x.work = ql.work;
    x.chunk = ql.chunk, x.splits = ql.splits;
    return launch_attend(x, st);
  };
  return a;
}

std::unique_ptr<EncodedLayer> encode_on_gpu(const LayerSpec& spec, const LayerKV& kv, const CodecContext& ctx) {
  KVB_CHECK(kv.head_dim <= kMaxHeadDim, Unsupported, "CUDA attention supports head_dim up to {}, found {}",
            kMaxHeadDim, kv.head_dim);
  return std::make_unique<GpuLayer>(spec, kv, ctx);
}

}  // namespace kvb::codecs::gpu
#endif  // KVB_WITH_CUDA
