#pragma once
/// Per-step math of BalanceKV's self-balancing walk (docs/codecs.md §6.2, §6.5 pitfall 5), shared by the CPU path
/// (select_cpu.cpp) and the CUDA kernel (select_cuda.cu) so that both draw the same uniforms and take
/// the same decisions. The naive reference (select_ref.cpp) takes only uniform01 from here (which draw
/// belongs to which step is part of kvbench's definition); it writes the Gram matrix, the decision and
/// the halving out on its own, so a bug in them shows up as a cpu-vs-ref mismatch.
///
/// The walk is computed in float64: a sign decision compares a uniform draw with p_i = 0.5 − γ·S_i, and
/// any difference in S_i between two implementations can flip a sign and send the rest of the block down
/// another path. In float64 the sums of the implementations differ by ~1e-16 relative (summation order
/// only), so a flip needs a draw within that distance of p_i; in float32 the window would be ~1e-7.
#include <cmath>
#include <cstdint>

#include "kvb/core/hd.h"
#include "kvb/core/rng.h"

namespace kvb::codecs::walk {

/// The walk's uniform U in [0, 1) for step `step` of block `block` at halving level `level` of KV head
/// `head` in layer `layer`: a counter-based draw (no generator state), so CPU threads, GPU warps and the
/// reference draw the same U for the same step whatever order they run in.
KVB_HD_INLINE double uniform01(uint64_t seed, uint32_t layer, uint32_t head, uint32_t level, uint64_t block,
                               uint64_t step) {
  uint64_t h = mix64(seed ^ 0x42616c616e63654bull);  // "BalanceK"
  h = mix64(h ^ (static_cast<uint64_t>(layer) << 32 | head));
  h = mix64(h ^ level);
  h = mix64(h ^ block);
  h = mix64(h ^ step);
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

/// The sign σ_i ∈ {+1, −1} of step i given the row's running sum in max-shifted form,
///   S_i = Σ_{j<i} exp(x_ij)·y_ij·σ_j = e^M · R,   M = max_j x_ij,   R = Σ_j e^{x_ij − M}·y_ij·σ_j,
/// the step size γ > 0 and the draw u: p_i = 0.5 − γ·S_i is the probability of +1. Whenever |γ·S_i| >= 0.5
/// (p outside (0, 1)) the decision is deterministic and is taken in log space,
///   log γ + M + log|R| >= log 0.5,
/// so e^M is never formed when it would overflow and inf − inf never reaches the comparison.
/// R == 0 (an empty or perfectly cancelling sum) gives p = 0.5.
KVB_HD_INLINE int decide(double M, double R, double gamma, double u) {
  if (R == 0.0) return u < 0.5 ? 1 : -1;
  const double log_mag = log(gamma) + M + log(fabs(R));
  if (log_mag >= -0.6931471805599453) return R > 0.0 ? -1 : 1;  // p <= 0: −1; p >= 1: +1
  const double p = 0.5 - gamma * exp(M) * R;
  return u < p ? 1 : -1;
}

/// Σ_j a[j]·b[j] in float64 with 4 partial sums in a fixed order: the CPU walk and the CUDA walk compute
/// every kernel entry with this one function, so their Gram entries agree to the last bit or two.
KVB_HD_INLINE double dot4(const double* a, const double* b, int n) {
  double acc0 = 0, acc1 = 0, acc2 = 0, acc3 = 0;
  int j = 0;
  for (; j + 4 <= n; j += 4) {
    acc0 += a[j] * b[j];
    acc1 += a[j + 1] * b[j + 1];
    acc2 += a[j + 2] * b[j + 2];
    acc3 += a[j + 3] * b[j + 3];
  }
  double s = (acc0 + acc1) + (acc2 + acc3);
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
}

/// The logit of a kernel entry: x_ij = τ·<k̄_i, k̄_j>/√d − β (dot = <k̄_i, k̄_j>).
KVB_HD_INLINE double kernel_logit(double dot, double temp, double inv_sqrt_d, double beta) {
  return temp * dot * inv_sqrt_d - beta;
}

/// The value factor of a kernel entry: y_ij = <v_i, v_j> + c + 1e-8 (docs/codecs.md §6.2; the 1e-8 is the
/// authors' code's).
KVB_HD_INLINE double kernel_value(double vdot, double const_denom) { return vdot + const_denom + 1e-8; }

}  // namespace kvb::codecs::walk
