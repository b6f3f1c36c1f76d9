// Device-resident qjl and h1b layers (sketch_kernels.h): the CPU layouts and storage items, encoded and attended
// by the kernels of sketch_cuda.cu. Compiled only with the CUDA backend.
#ifdef KVB_WITH_CUDA
#include <algorithm>
#include <cmath>
#include <vector>

#include "codecs/common/baseline.h"
#include "kernels/cuda/launch.h"
#include "codecs/common/gpu_layer.h"
#include "codecs/sketch/h1b_codec.h"
#include "codecs/sketch/qjl_codec.h"
#include "codecs/sketch/sketch_cpu.h"
#include "codecs/sketch/sketch_entries.h"
#include "codecs/sketch/sketch_kernels.h"
#include "codecs/sketch/sketch_layer.h"
#include "kvb/core/error.h"
#include "kvb/cuda/runtime.h"

namespace kvb::codecs {

uint64_t qjl_projection_seed(uint64_t seed, int layer_set);  // qjl_entry.cpp

namespace {

using cuda::check;
using cuda::DeviceBuffer;

/// Shared-memory floats the QJL attention block needs beyond 48 KiB are refused (no opt-in carve-out).
constexpr int64_t kMaxSharedFloats = 48 * 1024 / 4;

/// The projection on the device.
struct DeviceProjection {
  DeviceBuffer s32, s64, t32, norm;
  sk::gpu::ProjView view;
  explicit DeviceProjection(const sk::Projection& P)
      : s32(DeviceBuffer::from(P.s32)), s64(DeviceBuffer::from(P.s64)), t32(DeviceBuffer::from(P.t32)),
        norm(DeviceBuffer::from(P.row_norm)) {
    view.rows = P.rows;
    view.d = P.d;
    view.s32 = s32.as<float>();
    view.s64 = s64.as<double>();
    view.t32 = t32.as<float>();
    view.row_norm = norm.as<double>();
  }
};

/// Values on the device: uniform.h rows for tokens [0, Vq), fp16 window after (SketchLayer's layout).
struct DeviceValues {
  kernels::uq::RowFormat f;
  int heads = 0;
  int64_t C = 0, Vq = 0;
  int d = 0;
  DeviceBuffer codes, sm, win;

  DeviceValues(kernels::uq::RowFormat fmt, int H, int64_t C_, int64_t vq, int d_) : f(fmt), heads(H), C(C_), Vq(vq), d(d_) {
    codes.alloc(static_cast<size_t>(H * Vq * f.bytes()));
    sm.alloc(static_cast<size_t>(H * Vq * f.groups()) * sizeof(kernels::uq::GroupParams));
    win.alloc(static_cast<size_t>(H * (C - Vq) * d) * sizeof(uint16_t));
    codes.zero(cuda::run_stream());
  }
  void encode(const float* dv, cudaStream_t s) const {
    kernels::gpu::EncodeTarget t;  // the token-quant format of the traits table (kernels/cuda/formats.h)
    t.bits = f.bits, t.group = f.group, t.q_tokens = Vq;
    t.codes = codes.as<uint8_t>(), t.sm = sm.as<kernels::uq::GroupParams>();
    check(kernels::gpu::TokenQuant::encode(dv, heads, C, d, t, s), "value quantization kernel");
    check(kernels::gpu::launch_tail_to_f16(dv, heads, C, Vq, d, win.as<uint16_t>(), s), "value window kernel");
  }
  kernels::gpu::Part part() const {
    kernels::gpu::Part p;
    p.fmt = kernels::gpu::Fmt::kTokenQuant;
    p.bits = f.bits;
    p.group = f.group;
    p.q_tokens = Vq;
    p.codes = codes.as<uint8_t>();
    p.sm = sm.as<kernels::uq::GroupParams>();
    p.tail = win.as<uint16_t>();
    return p;
  }
  void add_storage(StorageList& st) const {
    st.add("v.codes", StorageKind::kCompressed, codes.bytes(), Vq)
        .add("v.scale_min", StorageKind::kCompressed, sm.bytes(), Vq)
        .add("v.window", StorageKind::kBuffer, win.bytes(), C - Vq);
  }
  void add_buffers(std::vector<NamedBuffer>& out) const {
    out.push_back({"v.codes", codes.to_host()});
    out.push_back({"v.scale_min", sm.to_host()});
    out.push_back({"v.window", win.to_host()});
  }
};

/// Common driver: queries to the device, one launch for nq queries of KV head g, results back.
class SketchGpuLayer : public gpu::DeviceLayer {
 public:
  SketchGpuLayer(const LayerKV& kv, const CodecContext& ctx) : DeviceLayer(kv.kv_heads), heads_(kv.kv_heads), C_(kv.tokens), d_(kv.head_dim), attn_(ctx.attn) {}
  int64_t tokens() const override { return C_; }

 protected:

  virtual int align() const = 0;
  virtual int64_t query_floats() const = 0;
  virtual cudaError_t launch(const sk::gpu::SketchAttend& a, cudaStream_t s) const = 0;
  virtual kernels::gpu::Part values() const = 0;

  /// This layer's attention for the shared device drivers (codecs/common/gpu_layer.h).
  kernels::gpu::DeviceAttend device_attend() const override {
    kernels::gpu::DeviceAttend da;
    da.d = d_;
    da.C = C_;
    da.what = "sketch attend kernels";
    da.plan = [this](int nq, int* chunk, int* splits) {
      return sk::gpu::plan_sketch_attend(nq, C_, d_, align(), query_floats(), chunk, splits);
    };
    da.launch = [this](const kernels::gpu::QueryLaunch& ql, cudaStream_t st) {
      sk::gpu::SketchAttend a;
      static_cast<kernels::gpu::SplitAttend&>(a) = kernels::gpu::split_attend(ql, attn_);
      a.v = values();
      return launch(a, st);
    };
    return da;
  }

  int heads_;
  int64_t C_;
  int d_;
  AttnConfig attn_;
};

class QjlGpuLayer final : public SketchGpuLayer {
 public:
  QjlGpuLayer(const QjlParams& p, int layer, std::shared_ptr<const sk::Projection> P, const LayerKV& kv,
              const CodecContext& ctx)
      : SketchGpuLayer(kv, ctx), p_(p), layer_(layer), m_(p.m_for(layer)), mo_(p.mo_for(layer)),
        Cq_(p.key_quant_tokens(kv.tokens)),
        P_(std::move(P)),
        vals_(kernels::uq::RowFormat{kv.head_dim, p.value_bits, p.value_group}, kv.kv_heads, kv.tokens,
              p.value_quant_tokens(kv.tokens), kv.head_dim) {
    const int64_t H = heads_, ng = Cq_ / p.group_size, ib = sk::outlier_index_bytes(d_);
    in_.alloc(static_cast<size_t>(H * Cq_ * (m_ / 8)));
    out_.alloc(static_cast<size_t>(H * Cq_ * (mo_ / 8)));
    norms_.alloc(static_cast<size_t>(H * Cq_ * 2) * sizeof(uint16_t));
    idx_.alloc(static_cast<size_t>(H * ng * p.outliers * ib));
    res_.alloc(static_cast<size_t>(H * (C_ - Cq_) * d_) * sizeof(uint16_t));
    keys_.heads = heads_;
    keys_.C = C_;
    keys_.Cq = Cq_;
    keys_.d = d_;
    keys_.m = m_;
    keys_.mo = mo_;
    keys_.G = p.group_size;
    keys_.no = p.outliers;
    keys_.ib = static_cast<int>(ib);
    keys_.bits_in = in_.as<uint8_t>();
    keys_.bits_out = out_.as<uint8_t>();
    keys_.norms = norms_.as<uint16_t>();
    keys_.idx = idx_.as<uint8_t>();
    keys_.res = res_.as<uint16_t>();
    keys_.P = proj_.view;
    const cudaStream_t s = cuda::run_stream();
    const DeviceBuffer dk = DeviceBuffer::from(kv.k), dv = DeviceBuffer::from(kv.v);
    run_encode(dk.as<float>(), dv.as<float>(), s);
    check(cudaStreamSynchronize(s), "qjl encode");
  }

  Storage storage() const override {
    StorageList st(heads_, p_.bytes_per_token(d_, layer_));
    st.add("k.inlier_bits", StorageKind::kCompressed, in_.bytes(), Cq_)
        .add("k.outlier_bits", StorageKind::kCompressed, out_.bytes(), Cq_)
        .add("k.norms", StorageKind::kCompressed, norms_.bytes(), Cq_)
        .add("k.outlier_idx", StorageKind::kCompressed, idx_.bytes(), Cq_)
        .add("k.residual", StorageKind::kBuffer, res_.bytes(), C_ - Cq_);
    vals_.add_storage(st);
    st.add("k.projection_seed", StorageKind::kFixed, sizeof(uint64_t), 0);
    return st.get();
  }
  std::vector<NamedBuffer> buffers() const override {
    std::vector<NamedBuffer> out{{"k.inlier_bits", in_.to_host()}, {"k.outlier_bits", out_.to_host()},
                                 {"k.norms", norms_.to_host()},    {"k.outlier_idx", idx_.to_host()},
                                 {"k.residual", res_.to_host()}};
    vals_.add_buffers(out);
    return out;
  }

 protected:
  void run_encode(const float* dk, const float* dv, cudaStream_t s) const override {
    check(sk::gpu::launch_qjl_encode(keys_, dk, s), "qjl encode kernel");
    check(kernels::gpu::launch_tail_to_f16(dk, heads_, C_, Cq_, d_, res_.as<uint16_t>(), s), "qjl key buffer kernel");
    vals_.encode(dv, s);
  }
  int align() const override { return p_.group_size; }
  int64_t query_floats() const override { return P_->rows; }
  cudaError_t launch(const sk::gpu::SketchAttend& a, cudaStream_t s) const override {
    return sk::gpu::launch_qjl_attend(keys_, a, s);
  }
  kernels::gpu::Part values() const override { return vals_.part(); }

 private:
  QjlParams p_;
  int layer_, m_, mo_;
  int64_t Cq_;
  std::shared_ptr<const sk::Projection> P_;  // the codec's, shared by its layers
  DeviceProjection proj_{*P_};
  DeviceValues vals_;
  DeviceBuffer in_, out_, norms_, idx_, res_;
  sk::gpu::QjlKeys keys_;
};

class H1bGpuLayer final : public SketchGpuLayer {
 public:
  H1bGpuLayer(const H1bParams& p, double T, std::shared_ptr<const sk::Projection> P, const LayerKV& kv,
              const CodecContext& ctx)
      : SketchGpuLayer(kv, ctx), p_(p), P_(std::move(P)),
        vals_(kernels::uq::RowFormat{kv.head_dim, p.value_bits, p.group(kv.head_dim)}, kv.kv_heads, kv.tokens, kv.tokens,
              kv.head_dim) {
    std::vector<float> tab(static_cast<size_t>(p.bits + 1));
    for (int h = 0; h <= p.bits; ++h)  // exactly H1bLayer's table (h1b_cpu.cpp)
      tab[h] = static_cast<float>(p.angle() ? std::cos(sk::kPi * h / p.bits) : (1.0 - 2.0 * h / p.bits) / T);
    tab_ = DeviceBuffer::from(tab);
    sketch_.alloc(static_cast<size_t>(heads_ * C_ * (p.bits / 8)));
    norms_.alloc(p.angle() ? static_cast<size_t>(heads_ * C_) * sizeof(uint16_t) : 0);
    keys_.heads = heads_;
    keys_.C = C_;
    keys_.d = d_;
    keys_.bits = p.bits;
    keys_.angle = p.angle();
    keys_.sketch = sketch_.as<uint8_t>();
    keys_.norms = norms_.as<uint16_t>();
    keys_.tab = tab_.as<float>();
    keys_.P = proj_.view;
    nw_.alloc(static_cast<size_t>(heads_ * C_) * sizeof(double));
    const cudaStream_t s = cuda::run_stream();
    const DeviceBuffer dk = DeviceBuffer::from(kv.k), dv = DeviceBuffer::from(kv.v);
    run_encode(dk.as<float>(), dv.as<float>(), s);
    check(cudaStreamSynchronize(s), "h1b encode");
  }

  Storage storage() const override {
    StorageList st(heads_, p_.bytes_per_token(d_));
    st.add("k.sketch", StorageKind::kCompressed, sketch_.bytes(), C_)
        .add("k.norms", StorageKind::kCompressed, norms_.bytes(), C_);
    vals_.add_storage(st);
    st.add("k.projection_seed", StorageKind::kFixed, sizeof(uint64_t), 0);
    if (!p_.angle()) st.add("temperature", StorageKind::kFixed, sizeof(float), 0);
    return st.get();
  }
  std::vector<NamedBuffer> buffers() const override {
    std::vector<NamedBuffer> out{{"k.sketch", sketch_.to_host()}, {"k.norms", norms_.to_host()}};
    vals_.add_buffers(out);
    return out;
  }

 protected:
  void run_encode(const float* dk, const float* dv, cudaStream_t s) const override {
    check(sk::gpu::launch_h1b_encode(keys_, dk, nw_.as<double>(), s), "h1b encode kernels");
    vals_.encode(dv, s);
  }
  int align() const override { return 1; }
  int64_t query_floats() const override { return 1 + (p_.bits / 8 + 3) / 4; }
  cudaError_t launch(const sk::gpu::SketchAttend& a, cudaStream_t s) const override {
    return sk::gpu::launch_h1b_attend(keys_, a, s);
  }
  kernels::gpu::Part values() const override { return vals_.part(); }

 private:
  H1bParams p_;
  std::shared_ptr<const sk::Projection> P_;  // the codec's, shared by its layers
  DeviceProjection proj_{*P_};
  DeviceValues vals_;
  DeviceBuffer tab_, sketch_, norms_, nw_;  // nw_: float64 key norms between the encode kernels
  sk::gpu::H1bKeys keys_;
};

}  // namespace

std::unique_ptr<EncodedLayer> qjl_encode_cuda(const QjlParams& p, int layer, std::shared_ptr<const sk::Projection> P,
                                              const LayerKV& kv, const CodecContext& ctx) {
  cuda::require_device();
  KVB_CHECK(kv.head_dim <= kernels::gpu::kMaxHeadDim, Unsupported, "qjl CUDA: head_dim up to {}, found {}",
            kernels::gpu::kMaxHeadDim, kv.head_dim);
  const int m = p.m_for(layer), mr = std::max(m, p.mo_for(layer));
  const int64_t chunk_max = std::max(sk::gpu::kMaxSketchChunk, p.group_size);
  KVB_CHECK(kv.head_dim + m + mr + chunk_max + 8 <= kMaxSharedFloats, Unsupported,
            "qjl CUDA: m {} with a {}-row projection and head_dim {} exceeds the attention block's 48 KiB of "
            "shared memory",
            m, mr, kv.head_dim);
  return std::make_unique<QjlGpuLayer>(p, layer, std::move(P), kv, ctx);
}

std::unique_ptr<EncodedLayer> h1b_encode_cuda(const H1bParams& p, double T, std::shared_ptr<const sk::Projection> P,
                                              const LayerKV& kv, const CodecContext& ctx) {
  cuda::require_device();
  KVB_CHECK(kv.head_dim <= kernels::gpu::kMaxHeadDim, Unsupported, "h1b CUDA: head_dim up to {}, found {}",
            kernels::gpu::kMaxHeadDim, kv.head_dim);
  return std::make_unique<H1bGpuLayer>(p, T, std::move(P), kv, ctx);
}

}  // namespace kvb::codecs
#endif  // KVB_WITH_CUDA
