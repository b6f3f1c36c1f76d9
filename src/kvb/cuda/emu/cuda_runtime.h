#pragma once
/// kvbench's CUDA emulator, device half: lets the host compiler build and *run* the project's .cu files.
///
/// Why: the kernels were written on machines without a GPU; nvcc proves they compile, nothing proved they
/// compute the right thing. An emulated build (cmake -DKVB_CUDA_EMULATE=ON, scripts/test.sh runs one) compiles
/// every .cu file as C++ against these headers and executes each launch on the CPU with CUDA's execution
/// model: every thread of a block is a fiber with its own threadIdx, __syncthreads is a block barrier,
/// __shfl_*_sync / __syncwarp exchange values between the 32 lanes of a warp, dynamic shared memory is one
/// poisoned (0xFF: NaN floats) buffer per block, static __shared__ arrays are shared by the block's fibers.
/// The GPU parity tests (ctest -L gpu) and `kvbench selftest --device cuda` then compare the kernels'
/// results with the CPU path end to end.
///
/// The .cu files are compiled with __CUDA_ARCH__ = 900, so the device branches of the shared KVB_HD headers
/// (bit casts, __popcll, __dadd_rn/__dmul_rn, byte-wise loads) are the ones that run, with the exact host
/// equivalents below.
///
/// What it checks that a real GPU run would also catch: indexing, reductions, split/merge logic, barrier
/// divergence (a deadlock is reported, naming the kernel and block), launch configurations (block > 1024
/// threads, grid y/z > 65535, dynamic shared memory above 48 KB without cudaFuncSetAttribute or above the
/// H100/H200 opt-in 227 KB), copies and memsets outside a cudaMalloc allocation, host pointers passed as
/// kernel arguments (pointer arguments only; pointers inside argument structs are not inspected), reads of
/// uninitialized dynamic shared memory (NaN). What it cannot: data races and memory ordering (blocks run one
/// after another, fibers switch only at barriers), device floating-point details (FMA contraction, the fast
/// math intrinsics' precision), performance. Timings from an emulated build are host times
/// of synchronous execution and mean nothing; the device name says "emulator".
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>

#include "cuda_runtime_api.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static thread_local  // the block's fibers share one OS thread (blocks run one at a time)

namespace kvb::emu {

/// The current fiber (one CUDA thread) and block.
struct ThreadCtx {
  uint3 tid;
};
struct BlockCtx {
  uint3 idx;
  dim3 dim, grid;
};
const ThreadCtx& self();
const BlockCtx& block();
void* dynamic_shared();

void sync_block();                                   ///< __syncthreads
void sync_warp();                                    ///< __syncwarp
uint64_t warp_exchange(uint64_t mine, int src_lane); ///< every lane posts `mine`, gets lane src_lane's post
int lane_id();
/// Every kvbench kernel synchronizes and shuffles whole warps; a partial mask (lanes left out on purpose) is
/// not emulated, and stops the program with a message instead of being treated as a full one.
void require_full_mask(unsigned mask, const char* what);

/// Runs body() as every thread of every block of the grid (blocks in order x, y, z); launch-configuration
/// errors and kernel faults become the last error, as cudaGetLastError reports them.
void run_grid(const char* kernel, const void* fn, dim3 grid, dim3 block, size_t smem, cudaStream_t s,
              const std::function<void()>& body);
/// Clears a kernel fault (sticky on a GPU until the process ends): for the emulator's own tests only.
void clear_fault();
/// false (and the last error set) when p is neither null nor inside a live cudaMalloc allocation.
bool check_kernel_pointer(const char* kernel, int arg, const void* p);

template <class T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

template <class... P>
struct Launch {
  const char* name;
  void (*fn)(P...);
  dim3 grid, blk;
  size_t smem;
  cudaStream_t stream;

  template <class... A>
  void operator()(A&&... args) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel argument count");
    std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);  // converted once, as the launch does
    bool ok = true;
    std::apply([&](const auto&... p) {
      int i = 0;
      ((ok = check_arg(i++, p) && ok), ...);
    }, params);
    if (!ok) return;
    run_grid(name, reinterpret_cast<const void*>(fn), grid, blk, smem, stream, [&] {
      std::tuple<std::decay_t<P>...> mine = params;  // each thread gets its own copy of the parameters
      std::apply(fn, mine);
    });
  }

 private:
  template <class T>
  bool check_arg(int i, const T& p) const {
    if constexpr (std::is_pointer_v<T>)
      return check_kernel_pointer(name, i, reinterpret_cast<const void*>(p));
    else
      return true;
  }
};

template <class... P>
Launch<P...> launch(const char* name, dim3 g, dim3 b, size_t smem, cudaStream_t s, void (*fn)(P...)) {
  return Launch<P...>{name, fn, g, b, smem, s};
}

}  // namespace kvb::emu

#define threadIdx (::kvb::emu::self().tid)
#define blockIdx (::kvb::emu::block().idx)
#define blockDim (::kvb::emu::block().dim)
#define gridDim (::kvb::emu::block().grid)
constexpr int warpSize = 32;

inline void __syncthreads() { kvb::emu::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  kvb::emu::require_full_mask(mask, "__syncwarp");
  kvb::emu::sync_warp();
}

namespace kvb::emu {
/// Every lane's shuffle: src = the source lane within this lane's `width`-lane segment, or -1 when it lies
/// outside (the lane keeps its own value, as __shfl_up/down/xor do).
template <class T>
T shuffle(unsigned mask, const char* what, T v, int src, int width) {
  require_full_mask(mask, what);
  const int base = lane_id() & ~(width - 1);
  return from_bits<T>(warp_exchange(to_bits(v), src >= 0 && src < width ? base + src : lane_id()));
}
}  // namespace kvb::emu

template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return kvb::emu::shuffle(mask, "__shfl_sync", v, src & (width - 1), width);  // srcLane modulo width
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return kvb::emu::shuffle(mask, "__shfl_xor_sync", v, (kvb::emu::lane_id() & (width - 1)) ^ lane_mask, width);
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return kvb::emu::shuffle(mask, "__shfl_down_sync", v, (kvb::emu::lane_id() & (width - 1)) + static_cast<int>(delta),
                           width);
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return kvb::emu::shuffle(mask, "__shfl_up_sync", v, (kvb::emu::lane_id() & (width - 1)) - static_cast<int>(delta),
                           width);
}

// Explicitly rounded arithmetic: the host's IEEE operations (emulated builds compile with -ffp-contract=off).
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __dsqrt_rn(double a) { return std::sqrt(a); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline unsigned __float_as_uint(float x) { return kvb::emu::from_bits<unsigned>(kvb::emu::to_bits(x)); }
inline float __uint_as_float(unsigned x) { return kvb::emu::from_bits<float>(kvb::emu::to_bits(x)); }
inline int __float_as_int(float x) { return kvb::emu::from_bits<int>(kvb::emu::to_bits(x)); }
inline float __int_as_float(int x) { return kvb::emu::from_bits<float>(kvb::emu::to_bits(x)); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }

// CUDA's integer/floating min and max overloads (device code calls them unqualified).
template <class A, class B>
constexpr std::common_type_t<A, B> min(A a, B b) {
  return b < a ? b : a;
}
template <class A, class B>
constexpr std::common_type_t<A, B> max(A a, B b) {
  return a < b ? b : a;
}
