// The eviction codecs on the GPU (evict_codec.h evict_encode_cuda): the kept positions are chosen on the host by
// evict_plan, the planner the CPU layer runs (so both keep the same rows and buffers() agree byte for byte), the
// rows are gathered from the uploaded float cache into packed fp16 on the device (kernels/cuda launch_gather_f16_packed,
// head g at rows [row_off[g], row_off[g+1])), and attention is the shared split-context kernel over the packed
// view (kernels/cuda/layer_view.h LayerView::row_off): exact softmax over head g's kept rows, weight 1 each,
//   o = Σ_r e^{ŝ_r} v̂_r / Σ_r e^{ŝ_r},   lse = ln Σ_r e^{ŝ_r}   (r over the kept rows only; a head with no rows
// attends to 0 with lse = −inf), the CPU layer's math in another summation order. Compiled only with the CUDA
// backend.
#ifdef KVB_WITH_CUDA
#include <algorithm>
#include <vector>

#include "codecs/common/gpu_layer.h"
#include "codecs/evict/evict_layer.h"
#include "kernels/cuda/drivers.h"
#include "kernels/cuda/launch.h"
#include "kvb/core/error.h"
#include "kvb/cuda/runtime.h"

namespace kvb::codecs {
namespace {

using cuda::check;
using cuda::DeviceBuffer;

class EvictGpuLayer final : public EvictLayerBase {
 public:
  EvictGpuLayer(const EvictParams& p, int layer, const LayerKV& kv, const CodecContext& ctx, EvictPlan plan)
      : EvictLayerBase(p, kv.kv_heads, kv.tokens, kv.head_dim, ctx.attn, std::move(plan)), layer_(layer), ctx_(ctx) {
    cuda::require_device();
    const size_t rows_bytes = static_cast<size_t>(total_rows()) * d_ * sizeof(uint16_t);
    k16_.alloc(rows_bytes), v16_.alloc(rows_bytes);
    doff_.alloc(plan_.row_off.size() * sizeof(int64_t));
    dpos_.alloc(plan_.pos.size() * sizeof(int32_t));
    const DeviceBuffer dk = DeviceBuffer::from(kv.k), dv = DeviceBuffer::from(kv.v);
    encode(dk.as<float>(), dv.as<float>(), plan_, cuda::run_stream());
    view_.heads = H_;
    view_.C = max_head_rows();
    view_.d = d_;
    view_.k.tail = k16_.as<uint16_t>();
    view_.v.tail = v16_.as<uint16_t>();
    view_.row_off = doff_.as<int64_t>();
  }

  std::vector<NamedBuffer> buffers() const override {
    std::vector<uint16_t> k(static_cast<size_t>(total_rows()) * d_), v(k.size());
    k16_.download(k.data(), k16_.bytes(), cuda::run_stream());
    v16_.download(v.data(), v16_.bytes(), cuda::run_stream());
    return packed_buffers(k, v);
  }

  bool scores(int g, const float* q, float* s_out, Scratch&) const override {
    std::vector<float> s(static_cast<size_t>(std::max<int64_t>(view_.C, 1)));
    std::vector<float> o(static_cast<size_t>(d_));
    kernels::gpu::attend_device(attend_kernel(), g, &q, 1, o.data(), s.data());
    scatter_scores(g, s.data(), s_out);  // the first head_rows(g) logits are head g's rows (layer_view.h)
    return true;
  }
  void attend(int g, const float* q, float* o_out, Scratch&) const override {
    kernels::gpu::attend_device(attend_kernel(), g, &q, 1, o_out, nullptr);
  }
  /// lse over the kept rows only (EncodedLayer's default would count every dropped token as a logit of 0):
  /// the kernel's logits row of head g, −inf past its head_rows(g) rows, from the same launch as the output.
  void attend_lse(int g, const float* q, float* o_out, double* lse_out, Scratch&) const override {
    std::vector<float> s(static_cast<size_t>(std::max<int64_t>(view_.C, 1)));
    kernels::gpu::attend_device(attend_kernel(), g, &q, 1, o_out, s.data());
    if (lse_out) *lse_out = logsumexp_logits(s.data(), head_rows(g));  // −inf for a head without rows
  }
  void attend_many(int g, const float* const* qs, int nq, float* const* outs, Scratch&) const override {
    kernels::gpu::attend_many_device(attend_kernel(), g, qs, nq, outs);
  }

  bool device_timing(const LayerKV& kv, const LayerQueries& q, int min_repeats, double min_time_s,
                     DeviceTimes* out) const override {
    // The events bracket the whole encode: the host planner (observation-window scores, top-k), the plan's
    // upload and the device gather. Deterministic: re-encoding writes the same plan and rows.
    kernels::gpu::time_encode_device(
        kv,
        [&](const float* k, const float* v, cudaStream_t st) {
          const EvictPlan plan = evict_plan(p_, layer_, kv, ctx_);
          const_cast<EvictGpuLayer*>(this)->encode(k, v, plan, st);
        },
        min_repeats, min_time_s, out);
    kernels::gpu::time_attend_device(attend_kernel(), H_, q, min_repeats, min_time_s, out);
    return true;
  }

 private:
  kernels::gpu::DeviceAttend attend_kernel() const {
    kernels::gpu::DeviceAttend a = gpu::baseline_attend(view_, attn_);
    a.what = "eviction attention kernel (packed fp16 rows)";
    return a;
  }

  /// The plan to the device and the kept rows of K and V (float caches dk, dv [H][C][d] on the device) into
  /// the packed fp16 buffers.
  void encode(const float* dk, const float* dv, const EvictPlan& plan, cudaStream_t s) {
    KVB_CHECK(plan.row_off.size() * sizeof(int64_t) == doff_.bytes() && plan.pos.size() * sizeof(int32_t) == dpos_.bytes(),
              RuntimeError, "eviction layer {}: re-planning kept {} rows, expected {} (the planner must be deterministic)",
              layer_, plan.pos.size(), dpos_.bytes() / sizeof(int32_t));
    doff_.upload(plan.row_off.data(), doff_.bytes(), s);
    dpos_.upload(plan.pos.data(), dpos_.bytes(), s);
    const int64_t longest = max_head_rows();
    check(kernels::gpu::launch_gather_f16_packed(dk, H_, C_, d_, dpos_.as<int32_t>(), doff_.as<int64_t>(), longest,
                                                 k16_.as<uint16_t>(), s),
          "eviction fp16 gather kernel (keys)");
    check(kernels::gpu::launch_gather_f16_packed(dv, H_, C_, d_, dpos_.as<int32_t>(), doff_.as<int64_t>(), longest,
                                                 v16_.as<uint16_t>(), s),
          "eviction fp16 gather kernel (values)");
    check(cudaStreamSynchronize(s), "eviction encode");
  }

  int layer_;
  CodecContext ctx_;
  DeviceBuffer k16_, v16_, doff_, dpos_;
  kernels::gpu::LayerView view_;
};

}  // namespace

std::unique_ptr<EncodedLayer> evict_encode_cuda(const EvictParams& p, int layer, const LayerKV& kv,
                                                const CodecContext& ctx) {
  KVB_CHECK(kv.head_dim <= kernels::gpu::kMaxHeadDim, Unsupported, "{}: CUDA attention supports head_dim up to {}, found {}",
            p.label(), kernels::gpu::kMaxHeadDim, kv.head_dim);
  EvictPlan plan = evict_plan(p, layer, kv, ctx);  // on the host, the CPU layer's planner
  return std::make_unique<EvictGpuLayer>(p, layer, kv, ctx, std::move(plan));
}

}  // namespace kvb::codecs
#endif  // KVB_WITH_CUDA
