// BalanceKV / uniform on the GPU: the walk runs in CUDA kernels (select_cuda.cu), the halving between
// levels on the host (the CPU path's halve()), the kept rows are gathered into fp16 on the device, and
// attention runs the baselines' split-context kernel over those rows with the weight classes
// (kernels/cuda/layer_view.h RowClasses). Compiled only with the CUDA backend.
#ifdef KVB_WITH_CUDA
#include <numeric>

#include "kernels/cuda/launch.h"
#include "codecs/common/gpu_layer.h"
#include "codecs/select/select_kernels.h"
#include "codecs/select/select_layer.h"
#include "kvb/core/error.h"
#include "kvb/cuda/runtime.h"

namespace kvb::codecs {
namespace {

using cuda::check;
using cuda::DeviceBuffer;

class SelectGpuLayer final : public SelectLayerBase {
 public:
  SelectGpuLayer(const SelectParams& p, int layer, const LayerKV& kv, const CodecContext& ctx)
      : SelectLayerBase(p, kv.kv_heads, kv.tokens, kv.head_dim, ctx.attn), layer_(layer), seed_(ctx.seed) {
    cuda::require_device();
    const size_t n = static_cast<size_t>(H_) * rows_ * d_ * sizeof(uint16_t);
    k16_.alloc(n), v16_.alloc(n);
    dcounts_.alloc(counts_.size() * sizeof(int32_t));
    DeviceBuffer dk = DeviceBuffer::from(kv.k), dv = DeviceBuffer::from(kv.v);
    encode(dk.as<float>(), dv.as<float>(), cuda::run_stream());
    view_.heads = H_;
    view_.C = rows_;
    view_.d = d_;
    view_.k.tail = k16_.as<uint16_t>();
    view_.v.tail = v16_.as<uint16_t>();
    view_.rows.n = p_.levels + 1;
    view_.rows.first = split_.sink;
    view_.rows.counts = dcounts_.as<int32_t>();
    for (int c = 0; c <= p_.levels; ++c) view_.rows.bias[c] = bias_[c], view_.rows.vfac[c] = vfac_[c];
  }

  std::vector<NamedBuffer> buffers() const override {
    std::vector<uint16_t> k(static_cast<size_t>(H_) * rows_ * d_), v(k.size());
    k16_.download(k.data(), k16_.bytes(), cuda::run_stream());
    v16_.download(v.data(), v16_.bytes(), cuda::run_stream());
    return split_buffers(k, v);
  }

  bool scores(int g, const float* q, float* s_out, Scratch&) const override {
    std::vector<float> s(static_cast<size_t>(rows_));
    kernels::gpu::scores_device(gpu::baseline_attend(view_, attn_), g, q, s.data());
    scatter_scores(g, s.data(), s_out);
    return true;
  }
  void attend(int g, const float* q, float* o_out, Scratch&) const override {
    kernels::gpu::attend_device(gpu::baseline_attend(view_, attn_), g, &q, 1, o_out, nullptr);
  }
  void attend_many(int g, const float* const* qs, int nq, float* const* outs, Scratch&) const override {
    kernels::gpu::attend_many_device(gpu::baseline_attend(view_, attn_), g, qs, nq, outs);
  }

  bool device_timing(const LayerKV& kv, const LayerQueries& q, int min_repeats, double min_time_s,
                     DeviceTimes* out) const override {
    // The events bracket the whole encode, host halvings and their transfers included (deterministic:
    // re-encoding writes the same rows and counts).
    kernels::gpu::time_encode_device(
        kv,
        [&](const float* k, const float* v, cudaStream_t st) { const_cast<SelectGpuLayer*>(this)->encode(k, v, st); },
        min_repeats, min_time_s, out);
    kernels::gpu::time_attend_device(gpu::baseline_attend(view_, attn_), H_, q, min_repeats, min_time_s, out);
    return true;
  }

 private:
  void encode(const float* dk, const float* dv, cudaStream_t s) {
    int64_t n = split_.mid;
    std::vector<std::vector<int32_t>> idx(H_), w(H_);
    for (int g = 0; g < H_; ++g) {
      idx[g].resize(static_cast<size_t>(n));
      std::iota(idx[g].begin(), idx[g].end(), 0);
      w[g].assign(static_cast<size_t>(n), 1);
    }
    for (int level = 0; level < p_.levels && n > 0; ++level) {
      // Every head has the same n at every level (each halving keeps exactly ⌊n/2⌋).
      std::vector<int32_t> hi, hw;
      for (int g = 0; g < H_; ++g) hi.insert(hi.end(), idx[g].begin(), idx[g].end()), hw.insert(hw.end(), w[g].begin(), w[g].end());
      DeviceBuffer di = DeviceBuffer::from(hi), dw = DeviceBuffer::from(hw);
      DeviceBuffer dsig(static_cast<size_t>(H_) * n);
      if (p_.walk == SelectWalk::kBalance) {
        DeviceBuffer kbar(static_cast<size_t>(H_) * n * d_ * sizeof(double)), vw(kbar.bytes());
        check(gpu::launch_walk_prep(dk, dv, H_, C_, d_, split_.sink, di.as<int32_t>(), dw.as<int32_t>(), n,
                                    p_.block_size, kbar.as<double>(), vw.as<double>(), s),
              "BalanceKV walk preparation kernel");
        gpu::WalkArgs a;
        a.seed = seed_, a.layer = layer_, a.level = level, a.block = p_.block_size;
        a.gamma = p_.gamma, a.temp = p_.temp, a.beta = p_.beta, a.const_denom = p_.const_denom;
        check(gpu::launch_walk(kbar.as<double>(), vw.as<double>(), H_, n, d_, a, dsig.as<int8_t>(), s),
              "BalanceKV walk kernel");
        std::vector<int8_t> sig(static_cast<size_t>(H_) * n);
        dsig.download(sig.data(), sig.size(), s);
        halve_all(sig, n, idx, w);
      } else {
        check(gpu::launch_coin_signs(H_, n, seed_, layer_, level, dsig.as<int8_t>(), s), "uniform signs kernel");
        std::vector<int8_t> sig(static_cast<size_t>(H_) * n);
        dsig.download(sig.data(), sig.size(), s);
        halve_all(sig, n, idx, w);
      }
      n /= 2;
    }
    for (int g = 0; g < H_; ++g) set_head(g, group_by_class(idx[g], w[g]));
    DeviceBuffer dpos = DeviceBuffer::from(pos_);
    check(kernels::gpu::launch_gather_f16(dk, H_, C_, d_, dpos.as<int32_t>(), rows_, k16_.as<uint16_t>(), s), "fp16 gather kernel");
    check(kernels::gpu::launch_gather_f16(dv, H_, C_, d_, dpos.as<int32_t>(), rows_, v16_.as<uint16_t>(), s), "fp16 gather kernel");
    dcounts_.upload(counts_.data(), counts_.size() * sizeof(int32_t), s);
    check(cudaStreamSynchronize(s), "BalanceKV encode");
  }

  void halve_all(const std::vector<int8_t>& sig, int64_t n, std::vector<std::vector<int32_t>>& idx,
                 std::vector<std::vector<int32_t>>& w) const {
    for (int g = 0; g < H_; ++g) {
      const std::vector<int8_t> sg(sig.begin() + static_cast<int64_t>(g) * n, sig.begin() + static_cast<int64_t>(g + 1) * n);
      halve(sg, idx[g], w[g]);
    }
  }

  int layer_;
  uint64_t seed_;
  DeviceBuffer k16_, v16_, dcounts_;
  kernels::gpu::LayerView view_;
};

}  // namespace

std::unique_ptr<EncodedLayer> select_encode_cuda(const SelectParams& p, int layer, const LayerKV& kv,
                                                 const CodecContext& ctx, WalkStats*) {
  KVB_CHECK(kv.head_dim <= kernels::gpu::kMaxHeadDim, Unsupported, "CUDA attention supports head_dim up to {}, found {}",
            kernels::gpu::kMaxHeadDim, kv.head_dim);
  KVB_CHECK(p.walk == SelectWalk::kUniform || p.block_size <= gpu::kMaxWalkBlock, Unsupported,
            "{}: the CUDA walk supports block_size up to {}, found {}", p.label(), gpu::kMaxWalkBlock, p.block_size);
  KVB_CHECK(p.levels + 1 <= kernels::gpu::kMaxRowClasses, Unsupported, "{}: the CUDA attention supports up to {} levels",
            p.label(), kernels::gpu::kMaxRowClasses - 1);
  return std::make_unique<SelectGpuLayer>(p, layer, kv, ctx);
}

}  // namespace kvb::codecs
#endif  // KVB_WITH_CUDA
