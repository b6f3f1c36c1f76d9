// kvcar on the GPU: the CPU encoder writes the latents (the same bytes as the CPU layer, so buffers() compare
// exactly), which live on the device with the folded decoder weights; every scores/attend call decodes all
// C cached tokens of the head on the device (latents -> floats, two matrix products with bias and
// LeakyReLU, as the paper's per-step decode) and runs softmax attention over the decoded rows.
// NOTE(kvcar): the matrix products are kvcar's own tiled SGEMM kernel, not cuBLAS: kvbench links cudart
// statically so a CUDA build still starts on machines without CUDA libraries, and this toolkit ships no
// static cuBLAS. Cross-layer reuse runs on the CPU backend only (Unsupported here).
#ifdef KVB_WITH_CUDA
#include <algorithm>
#include <map>
#include <mutex>
#include <string>

#include <fmt/format.h>

#include "codecs/kvcar/kvcar_codec.h"
#include "codecs/kvcar/kvcar_cpu.h"
#include "codecs/kvcar/kvcar_kernels.h"
#include "kvb/core/error.h"
#include "kvb/cuda/runtime.h"

namespace kvb::codecs {
namespace {

struct DevAe {
  int h = 0, dl = 0;
  float slope = 0.01f;
  cuda::DeviceBuffer w3, c3, w4, c4;
  explicit DevAe(const CpuAe& a)
      : h(a.h), dl(a.dl), slope(a.slope), w3(cuda::DeviceBuffer::from(a.w3)), c3(cuda::DeviceBuffer::from(a.c3)),
        w4(cuda::DeviceBuffer::from(a.w4)), c4(cuda::DeviceBuffer::from(a.c4)) {}
};

class KvcarGpuLayer final : public EncodedLayer {
 public:
  KvcarGpuLayer(const LayerKV& kv, const KvcarParams& p, const KvcarFit& f, std::vector<NamedBuffer> bufs, Storage st,
                AttnConfig attn)
      : C_(kv.tokens), H_(kv.kv_heads), d_(kv.head_dim), int8_(p.int8), attn_(attn), st_(std::move(st)),
        host_(std::move(bufs)), k_(*f.cpu_k), v_(*f.cpu_v) {
    slot_.assign(H_, -1);
    for (size_t i = 0; i < f.model->stored.size(); ++i) slot_[f.model->stored[i]] = static_cast<int>(i);
    for (const NamedBuffer& b : host_) {
      cuda::DeviceBuffer d(b.bytes.size());
      d.upload(b.bytes.data(), b.bytes.size());
      dev_.emplace(b.name, std::move(d));
    }
    const int h = std::max(k_.h, v_.h);
    z_.alloc(static_cast<size_t>(C_) * k_.dl * sizeof(float));
    hid_.alloc(static_cast<size_t>(C_) * h * sizeof(float));
    kd_.alloc(static_cast<size_t>(C_) * d_ * sizeof(float));
    vd_.alloc(static_cast<size_t>(C_) * d_ * sizeof(float));
  }
  int64_t tokens() const override { return C_; }
  Storage storage() const override { return st_; }
  std::vector<NamedBuffer> buffers() const override {
    std::vector<NamedBuffer> out;
    for (const NamedBuffer& b : host_) {
      NamedBuffer n{b.name, dev_.at(b.name).to_host()};
      out.push_back(std::move(n));
    }
    return out;
  }
  bool scores(int g, const float* q, float* s_out, Scratch&) const override {
    std::lock_guard<std::mutex> lock(mu_);
    decode(true, g);
    run(&q, 1, s_out, nullptr);
    return true;
  }
  void attend(int g, const float* q, float* o_out, Scratch& scratch) const override {
    attend_many(g, &q, 1, &o_out, scratch);
  }
  void attend_many(int g, const float* const* qs, int nq, float* const* outs, Scratch&) const override {
    std::lock_guard<std::mutex> lock(mu_);
    decode(true, g);
    decode(false, g);
    std::vector<float> o(static_cast<size_t>(nq) * d_);
    run(qs, nq, nullptr, o.data());
    for (int i = 0; i < nq; ++i) std::copy(o.begin() + static_cast<size_t>(i) * d_, o.begin() + static_cast<size_t>(i + 1) * d_, outs[i]);
  }

 private:
  /// Decode every cached token of head g (keys or values) into kd_ / vd_.
  void decode(bool keys, int g) const {
    const DevAe& a = keys ? k_ : v_;
    cudaStream_t s = cuda::run_stream();
    const int slot = slot_[g];
    const std::string p = keys ? "k." : "v.";
    cuda::check(kvcar_gpu::launch_latents(int8_ ? nullptr : dev_.at(p + "latent").as<uint16_t>(),
                                          int8_ ? dev_.at(p + "latent").as<int8_t>() : nullptr,
                                          int8_ ? dev_.at(p + "scale_min").as<float>() : nullptr, C_, a.dl,
                                          z_.as<float>(), s),
                "kvcar latents");
    cuda::check(kvcar_gpu::launch_gemm_nt(z_.as<float>(), a.w3.as<float>(), C_, a.h, a.dl, a.c3.as<float>(), true,
                                          a.slope, hid_.as<float>(), s),
                "kvcar decoder layer 1");
    cuda::check(kvcar_gpu::launch_gemm_nt(hid_.as<float>(), a.w4.as<float>() + static_cast<size_t>(slot) * d_ * a.h, C_,
                                          d_, a.h, a.c4.as<float>() + static_cast<size_t>(slot) * d_, false, 0.f,
                                          (keys ? kd_ : vd_).as<float>(), s),
                "kvcar decoder layer 2");
  }
  /// Attention of nq host queries over the decoded rows; logits [nq][C] and/or outputs [nq][d] to the host.
  void run(const float* const* qs, int nq, float* logits, float* out) const {
    cudaStream_t s = cuda::run_stream();
    std::vector<float> q(static_cast<size_t>(nq) * d_);
    for (int i = 0; i < nq; ++i) std::copy(qs[i], qs[i] + d_, q.begin() + static_cast<size_t>(i) * d_);
    cuda::DeviceBuffer qb = cuda::DeviceBuffer::from(q);
    cuda::DeviceBuffer work(static_cast<size_t>(nq) * C_ * sizeof(float));
    cuda::DeviceBuffer lg(logits ? static_cast<size_t>(nq) * C_ * sizeof(float) : 0);
    cuda::DeviceBuffer ob(static_cast<size_t>(nq) * d_ * sizeof(float));
    cuda::check(kvcar_gpu::launch_attend_rows(kd_.as<float>(), vd_.as<float>(), C_, d_, qb.as<float>(), nq,
                                              attn_.softmax_scale, attn_.softcap, logits ? lg.as<float>() : nullptr,
                                              work.as<float>(), ob.as<float>(), s),
                "kvcar attention");
    if (logits) lg.download(logits, static_cast<size_t>(nq) * C_ * sizeof(float), s);
    if (out) ob.download(out, static_cast<size_t>(nq) * d_ * sizeof(float), s);
  }

  int64_t C_;
  int H_, d_;
  bool int8_;
  AttnConfig attn_;
  Storage st_;
  std::vector<NamedBuffer> host_;
  std::map<std::string, cuda::DeviceBuffer> dev_;
  DevAe k_, v_;
  std::vector<int> slot_;
  mutable std::mutex mu_;  // the decode buffers are shared by the runner's OpenMP threads
  mutable cuda::DeviceBuffer z_, hid_, kd_, vd_;
};

}  // namespace

std::unique_ptr<EncodedLayer> kvcar_encode_cuda(const KvcarParams& p, const KvcarFit& f, int layer, const LayerKV& kv,
                                                const EncodedLayer* prev, const CodecContext& ctx) {
  (void)prev;
  KVB_CHECK(f.model->reused.empty(), Unsupported,
            "{}: cross-layer reuse runs on the CPU backend only (layer {} reuses {} head(s))", p.label(), layer,
            f.model->reused.size());
  KVB_CHECK(!f.model->stored.empty() && f.cpu_k && f.cpu_v, RuntimeError, "{}: layer {} has no fitted autoencoder",
            p.label(), layer);
  cuda::require_device();
  // The CPU encoder writes the latents; the device holds them and decodes at every call.
  const auto host = kvcar_encode_cpu(p, f, layer, kv, nullptr, ctx);
  return std::make_unique<KvcarGpuLayer>(kv, p, f, host->buffers(), host->storage(), ctx.attn);
}

}  // namespace kvb::codecs
#endif
