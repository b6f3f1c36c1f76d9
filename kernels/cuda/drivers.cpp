// Host drivers of the split-context attention kernels (see drivers.h). Compiled only with the CUDA backend.
#ifdef KVB_WITH_CUDA
#include "kernels/cuda/drivers.h"

#include <algorithm>
#include <vector>

#include "kvb/cuda/runtime.h"

namespace kvb::kernels::gpu {

using cuda::check;
using cuda::DeviceBuffer;

void attend_device(const DeviceAttend& a, int g, const float* const* qs, int nq, float* o, float* logits) {
  const int d = a.d;
  const cudaStream_t s = cuda::run_stream();
  std::vector<float> qh_host(static_cast<size_t>(nq) * d);
  for (int i = 0; i < nq; ++i) std::copy_n(qs[i], d, qh_host.data() + static_cast<size_t>(i) * d);
  const std::vector<int> heads(static_cast<size_t>(nq), g);
  DeviceBuffer dq(qh_host.size() * sizeof(float)), dh(heads.size() * sizeof(int));
  dq.upload(qh_host.data(), dq.bytes(), s);
  dh.upload(heads.data(), dh.bytes(), s);
  QueryLaunch ql;
  ql.q = dq.as<float>(), ql.q_head = dh.as<int>(), ql.nq = nq;
  DeviceBuffer work(static_cast<size_t>(a.plan(nq, &ql.chunk, &ql.splits)) * sizeof(float));
  DeviceBuffer dout(static_cast<size_t>(nq) * d * sizeof(float));
  DeviceBuffer dlog(logits ? static_cast<size_t>(nq) * a.C * sizeof(float) : 0);
  ql.work = work.as<float>();
  ql.out = dout.as<float>();
  ql.logits = logits ? dlog.as<float>() : nullptr;
  check(a.launch(ql, s), a.what);
  dout.download(o, dout.bytes(), s);
  if (logits) dlog.download(logits, dlog.bytes(), s);
}

void attend_many_device(const DeviceAttend& a, int g, const float* const* qs, int nq, float* const* outs) {
  std::vector<float> o(static_cast<size_t>(nq) * a.d);
  attend_device(a, g, qs, nq, o.data(), nullptr);
  for (int i = 0; i < nq; ++i) std::copy_n(o.data() + static_cast<size_t>(i) * a.d, a.d, outs[i]);
}

void scores_device(const DeviceAttend& a, int g, const float* q, float* s) {
  std::vector<float> o(static_cast<size_t>(a.d));
  attend_device(a, g, &q, 1, o.data(), s);
}

void time_encode_device(const LayerKV& kv, const std::function<void(const float*, const float*, cudaStream_t)>& encode,
                        int min_repeats, double min_time_s, DeviceTimes* out) {
  const DeviceBuffer dk = DeviceBuffer::from(kv.k), dv = DeviceBuffer::from(kv.v);
  const cuda::EventTiming te = cuda::time_events([&](cudaStream_t st) { encode(dk.as<float>(), dv.as<float>(), st); },
                                                 cuda::run_stream(), min_repeats, min_time_s);
  out->encode_median_s = te.median_s;
  out->encode_p95_s = te.p95_s;
  out->encode_samples = te.samples;
}

void time_attend_device(const DeviceAttend& a, int kv_heads, const LayerQueries& q, int min_repeats,
                        double min_time_s, DeviceTimes* out) {
  const cudaStream_t s = cuda::run_stream();
  const int nq = static_cast<int>(static_cast<int64_t>(q.heads) * q.n);
  const int group = q.heads / kv_heads;
  std::vector<int> qh(static_cast<size_t>(nq));
  for (int i = 0; i < nq; ++i) qh[i] = static_cast<int>(i / q.n) / group;  // q is [heads][n][d]
  DeviceBuffer dq = DeviceBuffer::from(q.q), dqh = DeviceBuffer::from(qh);
  QueryLaunch ql;
  ql.q = dq.as<float>(), ql.q_head = dqh.as<int>(), ql.nq = nq;
  DeviceBuffer work(static_cast<size_t>(a.plan(nq, &ql.chunk, &ql.splits)) * sizeof(float));
  DeviceBuffer dout(static_cast<size_t>(nq) * a.d * sizeof(float));
  ql.work = work.as<float>();
  ql.out = dout.as<float>();
  const cuda::EventTiming ta =
      cuda::time_events([&](cudaStream_t st) { check(a.launch(ql, st), a.what); }, s, min_repeats, min_time_s);
  out->attend_median_s = ta.median_s;
  out->attend_p95_s = ta.p95_s;
  out->attend_samples = ta.samples;
  out->device = cuda::device_label();
}

}  // namespace kvb::kernels::gpu
#endif  // KVB_WITH_CUDA
