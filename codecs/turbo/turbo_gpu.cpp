// TurboQuant's device-resident layer: the CPU layer's buffers and storage items (turbo_codec.h layout),
// encoded by turbo_cuda.cu's encode_rows and attended straight from the codes (turbo_kernels.h). The rotations,
// sketches and codebooks are the CPU's (turbo::make_part on the host, uploaded once per layer); the outlier
// channels are chosen on the host from the prefill as the CPU does (O(C·d), a plan, not part of the timed
// device encode). Compiled only with the CUDA backend.
#ifdef KVB_WITH_CUDA
#include <algorithm>
#include <vector>

#include "codecs/common/baseline.h"
#include "codecs/common/gpu_layer.h"
#include "codecs/turbo/turbo_codec.h"
#include "codecs/turbo/turbo_kernels.h"
#include "kernels/cuda/drivers.h"
#include "kernels/cuda/launch.h"
#include "kvb/core/error.h"
#include "kvb/cuda/runtime.h"

namespace kvb::codecs {
namespace {

using cuda::check;
using cuda::DeviceBuffer;
using turbo::Part;

/// The 48 KiB of shared memory an encode block may use: u, y (float64) and code (int) per channel.
constexpr int kMaxEncodeDim = 48 * 1024 / 20;

/// One part (K or V) of every KV head on the device: its instances' matrices and its rows.
struct DevicePart {
  std::vector<Part> heads;  // the host state (CPU's make_part), for storage and the channel lists
  std::vector<DeviceBuffer> mats;
  DeviceBuffer codes, norms, signs, rnorms;
  turbo::gpu::PartView view;

  DevicePart(std::vector<Part> h, int64_t C) : heads(std::move(h)) {
    const Part& P0 = heads[0];
    const uint64_t rows = static_cast<uint64_t>(heads.size()) * static_cast<uint64_t>(C);
    KVB_CHECK(P0.inst.size() <= static_cast<size_t>(turbo::gpu::kMaxInstances), RuntimeError,
              "turboquant CUDA: {} instances per part, at most {}", P0.inst.size(), turbo::gpu::kMaxInstances);
    view.ninst = static_cast<int>(P0.inst.size());
    view.code_bytes = P0.code_bytes, view.norms = P0.norms, view.sign_bytes = P0.sign_bytes, view.rnorms = P0.rnorms;
    view.width = P0.width;
    int w = 0;
    for (size_t s = 0; s < P0.inst.size(); ++s) {
      const turbo::Instance& I0 = P0.inst[s];
      turbo::gpu::InstView& V = view.inst[s];
      V.n = I0.n, V.mb = I0.mb, V.prod = I0.prod ? 1 : 0;
      V.code_bit_off = I0.code_bit_off, V.norm_slot = I0.norm_slot, V.sign_off = I0.sign_off, V.rnorm_slot = I0.rnorm_slot;
      V.w_off = w;
      w += I0.n * ((I0.mb > 0 ? 1 : 0) + (I0.prod ? 1 : 0));
      std::vector<int> ch;
      std::vector<double> pit, st;
      std::vector<float> pi32, s32;
      for (const Part& P : heads) {
        const turbo::Instance& I = P.inst[s];
        ch.insert(ch.end(), I.channels.begin(), I.channels.end());
        pit.insert(pit.end(), I.pit.begin(), I.pit.end());
        pi32.insert(pi32.end(), I.pi32.begin(), I.pi32.end());
        st.insert(st.end(), I.st.begin(), I.st.end());
        s32.insert(s32.end(), I.s32.begin(), I.s32.end());
      }
      V.channels = upload(ch);
      V.pit = upload(pit);
      V.pi32 = upload(pi32);
      if (I0.prod) V.st = upload(st), V.s32 = upload(s32);
      if (I0.mb > 0) {  // every head's instance s has the same (n, levels): one codebook
        V.nb = static_cast<int>(I0.cb->boundaries.size());
        if (V.nb > 0) V.bnd = upload(I0.cb->boundaries);
        V.cent = upload(I0.cb->centroids);
        V.c32 = upload(I0.c32);
      }
    }
    codes.alloc(rows * P0.code_bytes);
    norms.alloc(rows * P0.norms * sizeof(uint16_t));
    signs.alloc(rows * P0.sign_bytes);
    rnorms.alloc(rows * P0.rnorms * sizeof(uint16_t));
    view.codes = codes.as<uint8_t>(), view.normv = norms.as<uint16_t>();
    view.signs = signs.as<uint8_t>(), view.rnormv = rnorms.as<uint16_t>();
  }

  template <class T>
  const T* upload(const std::vector<T>& v) {
    mats.push_back(DeviceBuffer::from(v));
    return mats.back().template as<const T>();
  }

  void add_buffers(const std::string& p, int d, std::vector<NamedBuffer>& out) const {
    if (codes.bytes()) out.push_back({p + ".codes", codes.to_host()});
    if (norms.bytes()) out.push_back({p + ".norm", norms.to_host()});
    if (signs.bytes()) out.push_back({p + ".qjl", signs.to_host()});
    if (rnorms.bytes()) out.push_back({p + ".rnorm", rnorms.to_host()});
    if (heads[0].n_out > 0) out.push_back({p + ".channels", turbo::channel_bytes(heads, d)});
  }
};

class TurboGpuLayer final : public gpu::DeviceLayer {
 public:
  TurboGpuLayer(const TurboParams& p, int layer, const LayerKV& kv, const CodecContext& ctx)
      : DeviceLayer(kv.kv_heads), H_(kv.kv_heads), C_(kv.tokens), d_(kv.head_dim), attn_(ctx.attn) {
    std::vector<Part> kh, vh;
    for (int g = 0; g < H_; ++g) {
      kh.push_back(turbo::make_part(p, true, layer, g, kv.k_head(g), C_, d_, ctx.seed));
      vh.push_back(turbo::make_part(p, false, layer, g, kv.v_head(g), C_, d_, ctx.seed));
    }
    k_ = std::make_unique<DevicePart>(std::move(kh), C_);
    v_ = std::make_unique<DevicePart>(std::move(vh), C_);
    const cudaStream_t s = cuda::run_stream();
    const DeviceBuffer dk = DeviceBuffer::from(kv.k), dv = DeviceBuffer::from(kv.v);
    run_encode(dk.as<float>(), dv.as<float>(), s);
    check(cudaStreamSynchronize(s), "turboquant encode");
  }

  int64_t tokens() const override { return C_; }
  Storage storage() const override { return turbo::layer_storage(k_->heads, v_->heads, C_, d_); }
  std::vector<NamedBuffer> buffers() const override {
    std::vector<NamedBuffer> out;
    k_->add_buffers("k", d_, out);
    v_->add_buffers("v", d_, out);
    return out;
  }


 private:
  void run_encode(const float* dk, const float* dv, cudaStream_t s) const override {
    check(turbo::gpu::launch_encode(k_->view, H_, C_, d_, dk, s), "turboquant key encode kernel");
    check(turbo::gpu::launch_encode(v_->view, H_, C_, d_, dv, s), "turboquant value encode kernel");
  }

  kernels::gpu::DeviceAttend device_attend() const override {
    kernels::gpu::DeviceAttend da;
    da.d = d_;
    da.C = C_;
    da.what = "turboquant attend kernels";
    da.plan = [this](int nq, int* chunk, int* splits) {
      return turbo::gpu::plan_attend(k_->view, v_->view, nq, C_, chunk, splits);
    };
    da.launch = [this](const kernels::gpu::QueryLaunch& ql, cudaStream_t st) {
      return turbo::gpu::launch_attend(k_->view, v_->view, C_, d_, kernels::gpu::split_attend(ql, attn_), st);
    };
    return da;
  }

  int H_;
  int64_t C_;
  int d_;
  AttnConfig attn_;
  std::unique_ptr<DevicePart> k_, v_;
};

}  // namespace

std::unique_ptr<EncodedLayer> turbo_encode_cuda(const TurboParams& p, int layer, const LayerKV& kv,
                                                const CodecContext& ctx) {
  cuda::require_device();
  KVB_CHECK(kv.head_dim <= std::min(kernels::gpu::kMaxHeadDim, kMaxEncodeDim), Unsupported,
            "turboquant CUDA: head_dim up to {}, found {}", std::min(kernels::gpu::kMaxHeadDim, kMaxEncodeDim),
            kv.head_dim);
  return std::make_unique<TurboGpuLayer>(p, layer, kv, ctx);
}

}  // namespace kvb::codecs
#endif  // KVB_WITH_CUDA
