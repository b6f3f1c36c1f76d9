// KVQuant's device-resident layer: the CPU layer's buffers and storage items (kvquant_codec.h layout), encoded by
// kvquant_cuda.cu in the CPU encoder's steps and attended from the codes with RoPE re-applied on the fly
// (kvquant_kernels.h). The fitted state (levels, per-channel key normalization) is the CPU's, uploaded once per
// layer; so are the RoPE tables (the encoder's per-row table, computed in float64 on the host as the CPU's, and
// the attention's two-level table). The outlier lists are sized by a first device pass (the counts) and one
// readback of their totals at construction; a timed re-encode writes the same bytes into the same buffers.
// Compiled only with the CUDA backend.
#ifdef KVB_WITH_CUDA
#include <vector>

#include "codecs/common/gpu_layer.h"
#include "codecs/kvquant/kvquant_codec.h"
#include "codecs/kvquant/kvquant_kernels.h"
#include "kernels/cuda/drivers.h"
#include "kernels/cuda/launch.h"
#include "kernels/formats/uniform.h"
#include "kvb/core/error.h"
#include "kvb/cuda/runtime.h"

namespace kvb::codecs {
namespace {

using cuda::check;
using cuda::DeviceBuffer;
namespace kg = kvquant::gpu;

/// One part's device buffers.
struct DevicePart {
  DeviceBuffer bounds, levels, codes, count, block, heads, index, value;
  kg::PartView view;

  void init(int bits, const std::vector<float>& bnd, const std::vector<float>& lev, int H, int64_t C, int d) {
    view.bits = bits;
    view.row_bytes = static_cast<int>(kernels::uq::row_bytes(d, bits));
    view.count_bytes = d > 255 ? 2 : 1;
    view.index_bytes = d > 256 ? 2 : 1;
    view.levels_n = static_cast<int>(lev.size());
    view.blocks = (C + 63) / 64;
    const uint64_t rows = static_cast<uint64_t>(H) * static_cast<uint64_t>(C);
    if (!bnd.empty()) bounds = DeviceBuffer::from(bnd);
    levels = DeviceBuffer::from(lev);
    codes.alloc(rows * view.row_bytes);
    count.alloc(rows * view.count_bytes);
    block.alloc(static_cast<uint64_t>(H) * view.blocks * sizeof(uint32_t));
    heads.alloc((H + 1) * sizeof(uint64_t));
    view.bounds = bounds.as<const float>(), view.levels = levels.as<const float>();
    view.codes = codes.as<uint8_t>(), view.count = count.as<uint8_t>();
    view.block = block.as<uint32_t>(), view.heads = heads.as<uint64_t>();
  }
  /// Sizes the outlier list from the scan's total (device heads[H]).
  void size_outliers(int H) {
    std::vector<uint64_t> h(static_cast<size_t>(H) + 1);
    heads.download(h.data(), h.size() * sizeof(uint64_t));
    index.alloc(h.back() * view.index_bytes);
    value.alloc(h.back() * sizeof(uint16_t));
    view.index = index.as<uint8_t>(), view.value = value.as<uint16_t>();
  }
  template <class T>
  static std::vector<T> host(const DeviceBuffer& b) {
    std::vector<T> v(b.bytes() / sizeof(T));
    if (!v.empty()) b.download(v.data(), b.bytes());
    return v;
  }
  kvquant::Part to_host() const {
    kvquant::Part P;
    P.bits = view.bits, P.row_bytes = view.row_bytes, P.count_bytes = view.count_bytes;
    P.index_bytes = view.index_bytes, P.blocks = view.blocks;
    P.codes = host<uint8_t>(codes), P.count = host<uint8_t>(count), P.block = host<uint32_t>(block);
    P.heads = host<uint64_t>(heads), P.index = host<uint8_t>(index), P.value = host<uint16_t>(value);
    return P;
  }
};

class KvquantGpuLayer final : public gpu::DeviceLayer {
 public:
  KvquantGpuLayer(std::shared_ptr<const kvquant::Trained> s, kernels::rope::Style rope, const LayerKV& kv,
                  const CodecContext& ctx)
      : DeviceLayer(kv.kv_heads), s_(std::move(s)), H_(kv.kv_heads), C_(kv.tokens), d_(kv.head_dim), pos0_(kv.pos0),
        attn_(ctx.attn) {
    kvquant::check_fits(*s_, kv, rope);
    const KvquantParams& p = s_->fitted_with;
    L_.H = H_, L_.d = d_, L_.C = C_;
    L_.rope = static_cast<int>(rope);
    L_.sparse = p.outliers > 0 ? 1 : 0;
    L_.q_hi = 1.0 - p.outliers / 2, L_.q_lo = p.outliers / 2;
    k_.init(p.k_bits, s_->k_bounds, s_->k_levels, H_, C_, d_);
    v_.init(p.v_bits, s_->v_bounds, s_->v_levels, H_, C_, d_);
    k_norm_ = DeviceBuffer::from(s_->k_norm);
    v_scale_.alloc(static_cast<uint64_t>(H_) * C_ * 2 * sizeof(uint16_t));
    v_thresh_.alloc(static_cast<uint64_t>(H_) * C_ * 2 * sizeof(float));
    L_.k_norm = k_norm_.as<const float>();
    L_.v_scale = v_scale_.as<uint16_t>();
    L_.v_thresh = v_thresh_.as<float>();
    if (rope != kernels::rope::Style::kNone) {
      const kernels::rope::Table unrot(rope, d_, ctx.rope.theta, pos0_, C_);
      const kernels::rope::BlockTable bt(rope, d_, ctx.rope.theta, pos0_, C_);
      for (const auto* v : {&unrot.cs, &unrot.sn, &bt.coarse_c, &bt.coarse_s, &bt.fine_c, &bt.fine_s})
        tables_.push_back(DeviceBuffer::from(*v));
      L_.unrot_c = tables_[0].as<const float>(), L_.unrot_s = tables_[1].as<const float>();
      L_.coarse_c = tables_[2].as<const float>(), L_.coarse_s = tables_[3].as<const float>();
      L_.fine_c = tables_[4].as<const float>(), L_.fine_s = tables_[5].as<const float>();
    }
    const cudaStream_t st = cuda::run_stream();
    const DeviceBuffer dk = DeviceBuffer::from(kv.k), dv = DeviceBuffer::from(kv.v);
    L_.k = k_.view, L_.v = v_.view;
    check(kg::launch_encode_rows(L_, dk.as<float>(), dv.as<float>(), st), "kvquant encode kernel");
    check(kg::launch_scan_counts(L_, st), "kvquant outlier-count kernel");
    check(cudaStreamSynchronize(st), "kvquant encode");
    k_.size_outliers(H_);
    v_.size_outliers(H_);
    L_.k = k_.view, L_.v = v_.view;
    check(kg::launch_write_outliers(L_, dk.as<float>(), dv.as<float>(), st), "kvquant outlier kernel");
    check(cudaStreamSynchronize(st), "kvquant encode");
    storage_ = kvquant::storage(*s_, encoded());  // once: the item sizes are fixed now (a re-encode writes the same)
  }

  int64_t tokens() const override { return C_; }
  Storage storage() const override { return storage_; }
  std::vector<NamedBuffer> buffers() const override { return kvquant::buffers(*s_, encoded()); }

 private:
  kvquant::Encoded encoded() const {
    kvquant::Encoded e;
    e.H = H_, e.d = d_, e.C = C_, e.pos0 = pos0_;
    e.k = k_.to_host();
    e.v = v_.to_host();
    e.v.scale = DevicePart::host<uint16_t>(v_scale_);
    return e;
  }

  void run_encode(const float* dk, const float* dv, cudaStream_t s) const override {
    check(kg::launch_encode_rows(L_, dk, dv, s), "kvquant encode kernel");
    check(kg::launch_scan_counts(L_, s), "kvquant outlier-count kernel");
    check(kg::launch_write_outliers(L_, dk, dv, s), "kvquant outlier kernel");
  }

  kernels::gpu::DeviceAttend device_attend() const override {
    kernels::gpu::DeviceAttend da;
    da.d = d_;
    da.C = C_;
    da.what = "kvquant attend kernel";
    da.plan = [this](int nq, int* chunk, int* splits) { return kg::plan_attend(nq, C_, d_, chunk, splits); };
    da.launch = [this](const kernels::gpu::QueryLaunch& ql, cudaStream_t st) {
      return kg::launch_attend(L_, kernels::gpu::split_attend(ql, attn_), st);
    };
    return da;
  }

  std::shared_ptr<const kvquant::Trained> s_;
  int H_;
  int64_t C_;
  int d_;
  int64_t pos0_;
  AttnConfig attn_;
  DevicePart k_, v_;
  DeviceBuffer k_norm_, v_scale_, v_thresh_;
  std::vector<DeviceBuffer> tables_;
  kg::LayerView L_;
  Storage storage_;
};

}  // namespace

std::unique_ptr<EncodedLayer> kvquant_encode_cuda(const KvquantParams& p, std::shared_ptr<const kvquant::Trained> s,
                                                  const LayerKV& kv, const CodecContext& ctx) {
  cuda::require_device();
  KVB_CHECK(kv.head_dim <= kernels::gpu::kMaxHeadDim, Unsupported, "kvquant CUDA: head_dim up to {}, found {}",
            kernels::gpu::kMaxHeadDim, kv.head_dim);
  KVB_CHECK(kv.kv_heads <= 512, Unsupported, "kvquant CUDA: at most 512 KV heads, found {}", kv.kv_heads);
  return std::make_unique<KvquantGpuLayer>(std::move(s), kvquant::key_rope(p, ctx), kv, ctx);
}

}  // namespace kvb::codecs
#endif  // KVB_WITH_CUDA
