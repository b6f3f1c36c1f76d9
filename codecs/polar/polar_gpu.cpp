// PolarQuant's device-resident layer: the CPU layer's buffers and storage items (polar_codec.h layout), encoded
// by polar_cuda.cu's encode_rows and attended straight from the codes (polar_kernels.h). The rotations (float64
// Πᵀ for the encoder, float32 Π for the query and output transforms), the codebooks and the decision and decode
// tables are the CPU's (polar::rotation and polar::make_tables on the host, uploaded once per layer).
// Compiled only with the CUDA backend.
#ifdef KVB_WITH_CUDA
#include <memory>
#include <vector>

#include "codecs/common/baseline.h"
#include "codecs/common/gpu_layer.h"
#include "codecs/polar/polar_codec.h"
#include "codecs/polar/polar_kernels.h"
#include "kernels/cuda/drivers.h"
#include "kernels/cuda/launch.h"
#include "kvb/core/error.h"
#include "kvb/cuda/runtime.h"

namespace kvb::codecs {
namespace {

using cuda::check;
using cuda::DeviceBuffer;

/// One part (K or V) of every KV head on the device: its rotations and its rows.
struct DevicePart {
  std::vector<uint64_t> seeds;  // [head]
  DeviceBuffer pit, pi32, codes, radii;
  polar::gpu::PartView view;

  DevicePart(const polar::Layout& lay, int H, int64_t C, int layer, int part, uint64_t run_seed) {
    const int dp = lay.dp;
    seeds.resize(static_cast<size_t>(H));
    std::vector<std::shared_ptr<const polar::Rotation>> rot(static_cast<size_t>(H));
    for (int g = 0; g < H; ++g) seeds[static_cast<size_t>(g)] = polar::rotation_seed(run_seed, layer, g, part);
    for_each_head(H, [&](int g) { rot[static_cast<size_t>(g)] = polar::rotation(dp, seeds[static_cast<size_t>(g)]); });
    std::vector<double> t64;
    std::vector<float> m32;
    t64.reserve(static_cast<size_t>(H) * dp * dp), m32.reserve(static_cast<size_t>(H) * dp * dp);
    for (const auto& r : rot) {
      t64.insert(t64.end(), r->m64t.begin(), r->m64t.end());
      m32.insert(m32.end(), r->m32.begin(), r->m32.end());
    }
    pit = DeviceBuffer::from(t64);
    pi32 = DeviceBuffer::from(m32);
    const uint64_t rows = static_cast<uint64_t>(H) * static_cast<uint64_t>(C);
    codes.alloc(rows * static_cast<uint64_t>(lay.row_bytes));
    radii.alloc(rows * static_cast<uint64_t>(lay.radii) * sizeof(uint16_t));
    view.pit = pit.as<const double>(), view.pi32 = pi32.as<const float>();
    view.codes = codes.as<uint8_t>(), view.radii = radii.as<uint16_t>();
  }

  void add_buffers(const std::string& p, std::vector<NamedBuffer>& out) const {
    out.push_back({p + ".angles", codes.to_host()});
    out.push_back({p + ".radii", radii.to_host()});
    out.push_back(named_buffer(p + ".rotation_seed", seeds));
  }
};

class PolarGpuLayer final : public gpu::DeviceLayer {
 public:
  PolarGpuLayer(const PolarParams& p, int layer, const LayerKV& kv, const CodecContext& ctx)
      : DeviceLayer(kv.kv_heads), lay_(p.layout(kv.head_dim)), H_(kv.kv_heads), C_(kv.tokens), d_(kv.head_dim),
        attn_(ctx.attn), k_(lay_, H_, C_, layer, 0, ctx.seed), v_(lay_, H_, C_, layer, 1, ctx.seed) {
    polar::Tables tab = polar::make_tables(lay_);
    codebook_ = std::move(tab.codebook);
    cs_ = DeviceBuffer::from(tab.cs);
    bcs_ = DeviceBuffer::from(tab.bcs);
    view_.lay = lay_;
    view_.d = d_, view_.C = C_;
    view_.bcs = bcs_.as<const double>(), view_.cs = cs_.as<const float>();
    view_.k = k_.view, view_.v = v_.view;
    const cudaStream_t s = cuda::run_stream();
    const DeviceBuffer dk = DeviceBuffer::from(kv.k), dv = DeviceBuffer::from(kv.v);
    run_encode(dk.as<float>(), dv.as<float>(), s);
    check(cudaStreamSynchronize(s), "polarquant encode");
  }

  int64_t tokens() const override { return C_; }
  Storage storage() const override { return polar_storage(lay_, H_, C_); }
  std::vector<NamedBuffer> buffers() const override {  // the CPU layer's names and order
    std::vector<NamedBuffer> out;
    k_.add_buffers("k", out);
    v_.add_buffers("v", out);
    out.push_back(named_buffer("codebook", codebook_));
    return out;
  }

 private:
  void run_encode(const float* dk, const float* dv, cudaStream_t s) const override {
    check(polar::gpu::launch_encode(view_, view_.k, H_, dk, s), "polarquant key encode kernel");
    check(polar::gpu::launch_encode(view_, view_.v, H_, dv, s), "polarquant value encode kernel");
  }

  kernels::gpu::DeviceAttend device_attend() const override {
    kernels::gpu::DeviceAttend da;
    da.d = d_;
    da.C = C_;
    da.what = "polarquant attend kernels";
    da.plan = [this](int nq, int* chunk, int* splits) { return polar::gpu::plan_attend(view_, nq, chunk, splits); };
    da.launch = [this](const kernels::gpu::QueryLaunch& ql, cudaStream_t st) {
      return polar::gpu::launch_attend(view_, kernels::gpu::split_attend(ql, attn_), st);
    };
    return da;
  }

  polar::Layout lay_;
  int H_;
  int64_t C_;
  int d_;
  AttnConfig attn_;
  DevicePart k_, v_;
  std::vector<float> codebook_;  // stored: Σ_ℓ 2^b float32 angles
  DeviceBuffer cs_, bcs_;
  polar::gpu::LayerView view_;
};

}  // namespace

std::unique_ptr<EncodedLayer> polar_encode_cuda(const PolarParams& p, int layer, const LayerKV& kv,
                                                const CodecContext& ctx) {
  cuda::require_device();
  // head_dim <= 512 (the split-context kernels' limit) keeps dp <= 1024: an encode block's shared memory
  // (polar_kernels.h encode_shared_bytes) stays under 13.3 KB and an attend block's under 12.3 KB.
  KVB_CHECK(kv.head_dim <= kernels::gpu::kMaxHeadDim, Unsupported, "polarquant CUDA: head_dim up to {}, found {}",
            kernels::gpu::kMaxHeadDim, kv.head_dim);
  return std::make_unique<PolarGpuLayer>(p, layer, kv, ctx);
}

}  // namespace kvb::codecs
#endif  // KVB_WITH_CUDA
