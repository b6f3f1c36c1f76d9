// lookat on the GPU: the CPU layouts of lookat_cpu.cpp in device memory (so buffers() compare byte for
// byte), encoded and attended by the kernels of lookat_kernels.h. Compiled only with the CUDA backend.
#ifdef KVB_WITH_CUDA
#include <algorithm>
#include <vector>

#include "codecs/common/baseline.h"
#include "kernels/cuda/launch.h"
#include "codecs/common/gpu_layer.h"
#include "codecs/pq/lookat_codec.h"
#include "codecs/pq/lookat_kernels.h"
#include "kernels/cpu/uniform_rows.h"
#include "kvb/core/error.h"
#include "kvb/cuda/runtime.h"

namespace kvb::codecs {
namespace {

using cuda::check;
using cuda::DeviceBuffer;

/// Largest lookup-table size (m·K floats) the attention kernel keeps in shared memory with a full chunk.
constexpr int64_t kMaxLutFloats = 40960;

class LookatGpuLayer final : public gpu::DeviceLayer {
 public:
  LookatGpuLayer(const LookatParams& p, const LookatCodebooks& cb, const LayerKV& kv, const CodecContext& ctx)
      : DeviceLayer(kv.kv_heads), p_(p), H_(kv.kv_heads), C_(kv.tokens), d_(kv.head_dim), m_(p.subspaces), K_(p.centroids()),
        attn_(ctx.attn), vf_{d_, p.value_bits(), p.value_group} {
    cuda::require_device();
    const cudaStream_t s = cuda::run_stream();
    codes_.alloc(static_cast<size_t>(H_) * C_ * m_);
    cb16_ = DeviceBuffer::from(cb.c16);
    cbf_ = DeviceBuffer::from(cb.c);  // the same values as floats (each exactly a binary16)
    if (p_.int_values()) {
      v_codes_.alloc(static_cast<size_t>(H_ * C_ * vf_.bytes()));
      v_sm_.alloc(static_cast<size_t>(H_ * C_ * vf_.groups()) * sizeof(kernels::uq::GroupParams));
      v_codes_.zero(s);
    } else {
      v16_.alloc(static_cast<size_t>(H_) * C_ * d_ * sizeof(uint16_t));
    }
    const DeviceBuffer dk = DeviceBuffer::from(kv.k), dv = DeviceBuffer::from(kv.v);
    run_encode(dk.as<float>(), dv.as<float>(), s);
    check(cudaStreamSynchronize(s), "lookat encode kernels");
  }

  int64_t tokens() const override { return C_; }

  Storage storage() const override {
    StorageList st(H_, p_.bytes_per_token(d_));
    st.add("k.codes", StorageKind::kCompressed, codes_.bytes(), C_);
    if (p_.int_values()) {
      st.add("v.codes", StorageKind::kCompressed, v_codes_.bytes(), C_);
      st.add("v.scale_min", StorageKind::kCompressed, v_sm_.bytes(), C_);
    } else {
      st.add("v.fp16", StorageKind::kCompressed, v16_.bytes(), C_);
    }
    st.add("k.codebooks", StorageKind::kFixed, cb16_.bytes(), 0);
    return st.get();
  }

  std::vector<NamedBuffer> buffers() const override {
    std::vector<NamedBuffer> out{{"k.codes", codes_.to_host()}};
    if (p_.int_values()) {
      out.push_back({"v.codes", v_codes_.to_host()});
      out.push_back({"v.scale_min", v_sm_.to_host()});
    } else {
      out.push_back({"v.fp16", v16_.to_host()});
    }
    out.push_back({"k.codebooks", cb16_.to_host()});
    return out;
  }


 private:
  void run_encode(const float* dk, const float* dv, cudaStream_t s) const override {
    check(gpu::launch_lookat_encode(dk, H_, C_, d_, m_, K_, cbf_.as<float>(), codes_.as<uint8_t>(), s),
          "lookat nearest-centroid kernel");
    if (p_.int_values()) {
      kernels::gpu::EncodeTarget t;  // the token-quant format of the traits table (kernels/cuda/formats.h)
      t.bits = vf_.bits, t.group = vf_.group, t.q_tokens = C_;
      t.codes = v_codes_.as<uint8_t>(), t.sm = v_sm_.as<kernels::uq::GroupParams>();
      check(kernels::gpu::TokenQuant::encode(dv, H_, C_, d_, t, s), "per-token value quantization kernel");
    } else {
      check(kernels::gpu::launch_to_f16(dv, static_cast<int64_t>(H_) * C_ * d_, v16_.as<uint16_t>(), s), "fp16 rows kernel");
    }
  }

  /// The attention of this layer for the shared device drivers (gpu_layer.h).
  kernels::gpu::DeviceAttend device_attend() const override {
    gpu::LookatAttendArgs a;
    a.codes = codes_.as<uint8_t>();
    a.cb = cbf_.as<float>();
    if (p_.int_values()) {
      a.v.fmt = kernels::gpu::Fmt::kTokenQuant;
      a.v.bits = vf_.bits;
      a.v.group = vf_.group;
      a.v.q_tokens = C_;
      a.v.codes = v_codes_.as<uint8_t>();
      a.v.sm = v_sm_.as<kernels::uq::GroupParams>();
    } else {
      a.v.fmt = kernels::gpu::Fmt::kF16;
      a.v.q_tokens = 0;
      a.v.tail = v16_.as<uint16_t>();
    }
    a.heads = H_;
    a.C = C_;
    a.d = d_, a.m = m_, a.K = K_;
    a.softmax_scale = attn_.softmax_scale;
    a.softcap = attn_.softcap;
    kernels::gpu::DeviceAttend da;
    da.d = d_;
    da.C = C_;
    da.what = "lookat attend kernel";
    da.plan = [C = C_, d = d_](int nq, int* chunk, int* splits) { return kernels::gpu::plan_attend(nq, C, d, chunk, splits); };
    da.launch = [a](const kernels::gpu::QueryLaunch& ql, cudaStream_t st) {
      gpu::LookatAttendArgs x = a;
      x.q = ql.q, x.q_head = ql.q_head, x.nq = ql.nq;
      x.out = ql.out, x.logits = ql.logits, x.work = ql.work;
      x.chunk = ql.chunk, x.splits = ql.splits;
      return gpu::launch_lookat_attend(x, st);
    };
    return da;
  }

  LookatParams p_;
  int H_;
  int64_t C_;
  int d_, m_, K_;
  AttnConfig attn_;
  kernels::uq::RowFormat vf_;
  DeviceBuffer codes_, cb16_, cbf_, v16_, v_codes_, v_sm_;
};

}  // namespace

std::unique_ptr<EncodedLayer> lookat_encode_cuda(const LookatParams& p, const LookatCodebooks& cb, const LayerKV& kv,
                                                 const CodecContext& ctx) {
  KVB_CHECK(static_cast<int64_t>(p.subspaces) * p.centroids() <= kMaxLutFloats, Unsupported,
            "lookat CUDA: m·K = {}·{} lookup-table floats exceed the {} the attention kernel keeps in shared memory",
            p.subspaces, p.centroids(), kMaxLutFloats);
  return std::make_unique<LookatGpuLayer>(p, cb, kv, ctx);
}

}  // namespace kvb::codecs
#endif  // KVB_WITH_CUDA
