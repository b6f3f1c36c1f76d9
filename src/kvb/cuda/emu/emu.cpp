// kvbench's CUDA emulator: the runtime API subset (cuda_runtime_api.h) and the block scheduler that runs
// kernels (cuda_runtime.h explains what is emulated and what is not). Compiled only with KVB_CUDA_EMULATE.
//
// Scheduler: one fiber (own stack) per CUDA thread of a block, run round-robin on the calling host thread.
// A fiber runs until it finishes or reaches a barrier (__syncthreads: block, __syncwarp and every shuffle:
// warp). When every fiber has stopped, a barrier is released once all live threads it concerns wait on
// it; if none can be released the block has deadlocked (divergent barriers) and the launch fails with a
// message naming the kernel, the block and where each warp waits. Finished threads count as arrived.
// Switching: on x86-64 a 16-instruction stack switch (callee-saved registers, MXCSR and the x87 control word:
// what the SysV ABI preserves across a call); elsewhere ucontext, whose swapcontext costs a signal-mask system
// call per switch (a warp shuffle is two switches per lane, so that is 10-50x slower).
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_runtime.h"

struct CUstream_st {
  int flags = 0;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point t{};
  bool recorded = false;
};

#if defined(__x86_64__)
#define KVB_EMU_ASM_SWITCH 1
// void kvb_emu_switch(void** save_sp, void* next_sp): pushes the callee-saved state, stores rsp in *save_sp,
// loads next_sp and pops the state saved there (a fresh fiber's stack is laid out by Context::make).
extern "C" void kvb_emu_switch(void** save_sp, void* next_sp);
asm(R"(
  .text
  .globl kvb_emu_switch
  .type kvb_emu_switch, @function
kvb_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size kvb_emu_switch, .-kvb_emu_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");
#endif

namespace kvb::emu {
namespace {

constexpr size_t kStackBytes = 256 << 10;      // per CUDA thread (kernels keep small frames; host -O2 frames)
constexpr size_t kDefaultSmem = 48 << 10;      // dynamic shared memory without cudaFuncSetAttribute
constexpr size_t kOptinSmem = 232448;          // H100/H200 sharedMemPerBlockOptin (227 KB)

thread_local cudaError_t t_last = cudaSuccess;  // CUDA's last error is per host thread
cudaError_t g_sticky = cudaSuccess;             // a kernel fault poisons the context, as on a GPU

cudaError_t fail(cudaError_t e) {
  t_last = e;
  return e;
}
cudaError_t status() { return g_sticky; }

void fault(cudaError_t e, const std::string& why) {
  std::fprintf(stderr, "kvbench CUDA emulator: %s\n", why.c_str());
  g_sticky = e;
  t_last = e;
}

std::mutex g_mu;
std::map<uintptr_t, size_t> g_allocs;       // cudaMalloc base -> bytes
std::map<const void*, size_t> g_smem_limit;  // kernel -> cudaFuncAttributeMaxDynamicSharedMemorySize

/// True when [p, p + n) lies inside one live allocation (n = 0: p inside it or one past its end).
bool in_alloc(const void* p, size_t n) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lk(g_mu);
  auto it = g_allocs.upper_bound(a);
  if (it == g_allocs.begin()) return false;
  --it;
  return a >= it->first && a + n <= it->first + it->second;
}

std::string hex(const void* p) {
  char b[32];
  std::snprintf(b, sizeof b, "%p", p);
  return b;
}

enum class St { kRun, kBlock, kWarp, kDone };

void fiber_entry();

/// A suspended execution context: the scheduler's or one CUDA thread's.
struct Context {
#if defined(KVB_EMU_ASM_SWITCH)
  void* sp = nullptr;
  /// Lays out `stack` so that switching to it "returns" into fiber_entry with the ABI's call alignment.
  void make(char* stack, size_t bytes) {
    auto top = reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t{15};
    auto* p = reinterpret_cast<uint64_t*>(top);
    *--p = 0;                                            // fiber_entry's "return address" slot (never used)
    *--p = reinterpret_cast<uint64_t>(&fiber_entry);     // popped by ret
    for (int i = 0; i < 6; ++i) *--p = 0;                // rbp rbx r12 r13 r14 r15
    uint32_t mx;
    uint16_t cw;
    asm volatile("stmxcsr %0" : "=m"(mx));
    asm volatile("fnstcw %0" : "=m"(cw));
    *--p = static_cast<uint64_t>(mx) | (static_cast<uint64_t>(cw) << 32);
    sp = p;
  }
  static void swap(Context& save, Context& next) { kvb_emu_switch(&save.sp, next.sp); }
#else
  ucontext_t uc{};
  void make(char* stack, size_t bytes) {
    getcontext(&uc);
    uc.uc_stack.ss_sp = stack;
    uc.uc_stack.ss_size = bytes;
    uc.uc_link = nullptr;
    makecontext(&uc, fiber_entry, 0);
  }
  static void swap(Context& save, Context& next) { swapcontext(&save.uc, &next.uc); }
#endif
};

struct Fiber {
  ThreadCtx t{};
  int warp = 0;
  int lane = 0;
  St st = St::kRun;
  uint64_t post = 0;
  Context ctx;
};

struct Block {
  BlockCtx c{};
  std::vector<Fiber> f;
  Context sched;
  const std::function<void()>* body = nullptr;
  unsigned char* dyn = nullptr;
  std::exception_ptr err;
};

thread_local Block* t_block = nullptr;
thread_local Fiber* t_fiber = nullptr;

/// Fiber stacks, grown to the largest block seen and reused (MAP_NORESERVE: untouched pages cost nothing).
struct Stacks {
  char* base = nullptr;
  size_t n = 0;
  ~Stacks() {
    if (base) munmap(base, n * kStackBytes);
  }
  char* get(size_t threads) {
    if (threads > n) {
      if (base) munmap(base, n * kStackBytes);
      void* p = mmap(nullptr, threads * kStackBytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
      if (p == MAP_FAILED) {
        base = nullptr, n = 0;
        return nullptr;
      }
      base = static_cast<char*>(p), n = threads;
    }
    return base;
  }
};
thread_local Stacks t_stacks;

/// Every fiber starts here and never returns: when the thread's body is done it switches to the scheduler
/// for good (its stack is reused by the next block).
void fiber_entry() {
  Block* b = t_block;
  try {
    (*b->body)();
  } catch (...) {
    if (!b->err) b->err = std::current_exception();
  }
  t_fiber->st = St::kDone;
  Context::swap(t_fiber->ctx, t_block->sched);
  std::abort();  // unreachable: a finished fiber is never resumed
}

void wait(St s) {
  Fiber* me = t_fiber;
  if (!me) {
    std::fprintf(stderr, "kvbench CUDA emulator: a barrier or shuffle outside a kernel\n");
    std::abort();
  }
  me->st = s;
  Context::swap(me->ctx, t_block->sched);
}

const char* where(St s) {
  switch (s) {
    case St::kRun: return "running";
    case St::kBlock: return "__syncthreads";
    case St::kWarp: return "a warp barrier (__syncwarp/__shfl_*)";
    case St::kDone: return "exited";
  }
  return "?";
}

/// Runs one block to completion; returns an empty string or why it failed.
/// Odd blocks run their threads in reverse order between barriers: a read of another thread's shared-memory
/// write that lacks a barrier then sees the write in some blocks and stale data in others, and the parity
/// checks fail instead of the missing barrier passing unnoticed because thread order happened to hide it.
std::string run_block(Block& b, char* stacks, bool reverse) {
  const size_t nt = b.f.size();
  for (size_t i = 0; i < nt; ++i) {
    Fiber& f = b.f[i];
    f.st = St::kRun;
    f.ctx.make(stacks + i * kStackBytes, kStackBytes);
  }
  const int warps = static_cast<int>((nt + 31) / 32);
  for (;;) {
    for (size_t k = 0; k < nt; ++k) {
      Fiber& f = b.f[reverse ? nt - 1 - k : k];
      if (f.st == St::kRun) {
        t_fiber = &f;
        Context::swap(b.sched, f.ctx);
      }
    }
    t_fiber = nullptr;
    if (b.err) {
      try {
        std::rethrow_exception(b.err);
      } catch (const std::exception& e) {
        return std::string("a thread threw: ") + e.what();
      } catch (...) {
        return "a thread threw";
      }
    }
    size_t alive = 0, at_block = 0;
    for (const Fiber& f : b.f) {
      alive += f.st != St::kDone;
      at_block += f.st == St::kBlock;
    }
    if (alive == 0) return {};
    if (at_block == alive) {
      for (Fiber& f : b.f)
        if (f.st == St::kBlock) f.st = St::kRun;
      continue;
    }
    bool released = false;
    for (int w = 0; w < warps; ++w) {
      size_t lo = static_cast<size_t>(w) * 32, hi = std::min(nt, lo + 32), live = 0, waiting = 0;
      for (size_t i = lo; i < hi; ++i) {
        live += b.f[i].st != St::kDone;
        waiting += b.f[i].st == St::kWarp;
      }
      if (live > 0 && waiting == live) {
        for (size_t i = lo; i < hi; ++i)
          if (b.f[i].st == St::kWarp) b.f[i].st = St::kRun;
        released = true;
      }
    }
    if (released) continue;
    std::string why = "deadlock (divergent barriers):";
    for (int w = 0; w < warps; ++w) {
      const size_t lo = static_cast<size_t>(w) * 32, hi = std::min(nt, lo + 32);
      why += " warp " + std::to_string(w) + " [";
      for (size_t i = lo; i < hi; ++i) {
        if (i == lo || b.f[i].st != b.f[i - 1].st) {
          if (i != lo) why += ", ";
          why += "lane " + std::to_string(i - lo) + ": " + where(b.f[i].st);
        }
      }
      why += "]";
    }
    return why;
  }
}

bool valid_config(dim3 g, dim3 b) {
  const unsigned long long threads = static_cast<unsigned long long>(b.x) * b.y * b.z;
  return threads >= 1 && threads <= 1024 && b.x <= 1024 && b.y <= 1024 && b.z <= 64 && g.x >= 1 &&
         g.x <= 2147483647u && g.y >= 1 && g.y <= 65535 && g.z >= 1 && g.z <= 65535;
}

}  // namespace

const ThreadCtx& self() {
  if (!t_fiber) {
    std::fprintf(stderr, "kvbench CUDA emulator: threadIdx read outside a kernel\n");
    std::abort();
  }
  return t_fiber->t;
}
const BlockCtx& block() {
  if (!t_block) {
    std::fprintf(stderr, "kvbench CUDA emulator: blockIdx read outside a kernel\n");
    std::abort();
  }
  return t_block->c;
}
void* dynamic_shared() { return t_block ? t_block->dyn : nullptr; }
int lane_id() { return t_fiber ? t_fiber->lane : 0; }
void require_full_mask(unsigned mask, const char* what) {
  if (mask == 0xffffffffu) return;
  std::fprintf(stderr, "kvbench CUDA emulator: %s with mask 0x%08x: only full-warp masks are emulated\n", what, mask);
  std::abort();
}
void sync_block() { wait(St::kBlock); }
void sync_warp() { wait(St::kWarp); }

uint64_t warp_exchange(uint64_t mine, int src_lane) {
  Fiber* me = t_fiber;
  me->post = mine;
  wait(St::kWarp);
  const size_t src = static_cast<size_t>(me->warp) * 32 + static_cast<size_t>(src_lane);
  const uint64_t v = src < t_block->f.size() ? t_block->f[src].post : mine;
  wait(St::kWarp);  // nobody posts again before every lane has read
  return v;
}

void clear_fault() {
  g_sticky = cudaSuccess;
  t_last = cudaSuccess;
}

bool check_kernel_pointer(const char* kernel, int arg, const void* p) {
  if (!p || in_alloc(p, 0)) return true;
  fault(cudaErrorIllegalAddress, std::string("kernel ") + kernel + ": argument " + std::to_string(arg) + " (" +
                                     hex(p) + ") is not device memory (no live cudaMalloc allocation holds it)");
  return false;
}

cudaError_t func_set_attribute(const void* fn, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || static_cast<size_t>(value) > kOptinSmem)
    return fail(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lk(g_mu);
  g_smem_limit[fn] = static_cast<size_t>(value);
  return cudaSuccess;
}

void run_grid(const char* kernel, const void* fn, dim3 grid, dim3 blk, size_t smem, cudaStream_t,
              const std::function<void()>& body) {
  if (g_sticky != cudaSuccess) return;
  if (!valid_config(grid, blk)) {
    std::fprintf(stderr, "kvbench CUDA emulator: kernel %s: invalid configuration grid (%u,%u,%u) block (%u,%u,%u)\n",
                 kernel, grid.x, grid.y, grid.z, blk.x, blk.y, blk.z);
    fail(cudaErrorInvalidConfiguration);
    return;
  }
  size_t limit = kDefaultSmem;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    auto it = g_smem_limit.find(fn);
    if (it != g_smem_limit.end()) limit = std::max(limit, it->second);
  }
  if (smem > limit) {
    std::fprintf(stderr,
                 "kvbench CUDA emulator: kernel %s: %zu bytes of dynamic shared memory above the %zu allowed "
                 "(cudaFuncSetAttribute(MaxDynamicSharedMemorySize) raises it up to %zu)\n",
                 kernel, smem, limit, kOptinSmem);
    fail(cudaErrorInvalidValue);
    return;
  }
  const size_t nt = static_cast<size_t>(blk.x) * blk.y * blk.z;
  char* stacks = t_stacks.get(nt);
  if (!stacks) {
    fail(cudaErrorLaunchOutOfResources);
    return;
  }
  // Exactly smem bytes (none: nullptr), so that AddressSanitizer builds (KVB_EMU_ASAN) see an overrun.
  void* dyn_raw = nullptr;
  if (smem > 0 && posix_memalign(&dyn_raw, 128, smem) != 0) {
    fail(cudaErrorLaunchOutOfResources);
    return;
  }
  std::unique_ptr<unsigned char, decltype(&std::free)> dyn(static_cast<unsigned char*>(dyn_raw), &std::free);
  Block b;
  b.c.dim = blk;
  b.c.grid = grid;
  b.body = &body;
  b.dyn = dyn.get();
  b.f.resize(nt);
  for (size_t i = 0; i < nt; ++i) {
    b.f[i].t.tid = uint3{static_cast<unsigned>(i % blk.x), static_cast<unsigned>(i / blk.x % blk.y),
                         static_cast<unsigned>(i / (static_cast<size_t>(blk.x) * blk.y))};
    b.f[i].warp = static_cast<int>(i / 32);
    b.f[i].lane = static_cast<int>(i % 32);
  }
  t_block = &b;  // kernels cannot launch kernels: no enclosing block to restore
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        b.c.idx = uint3{x, y, z};
        if (smem) std::memset(b.dyn, 0xFF, smem);  // uninitialized shared memory reads as NaN / -1
        const std::string why = run_block(b, stacks, ((x + y + z) & 1u) != 0);
        if (!why.empty()) {
          t_block = nullptr;
          fault(cudaErrorLaunchFailure, std::string("kernel ") + kernel + " block (" + std::to_string(x) + "," +
                                            std::to_string(y) + "," + std::to_string(z) + "): " + why);
          return;
        }
      }
  t_block = nullptr;
}

}  // namespace kvb::emu

using kvb::emu::fail;
using kvb::emu::status;

cudaError_t cudaMalloc(void** p, size_t bytes) {
  if (!p) return fail(cudaErrorInvalidValue);
  *p = nullptr;
  if (status() != cudaSuccess) return fail(status());
  if (bytes == 0) return cudaSuccess;
  void* m = nullptr;  // 256-byte aligned as cudaMalloc, exactly `bytes` long (AddressSanitizer sees overruns)
  if (posix_memalign(&m, 256, bytes) != 0) return fail(cudaErrorMemoryAllocation);
  std::memset(m, 0xFF, bytes);  // cudaMalloc does not clear: poison so that reads before writes show
  std::lock_guard<std::mutex> lk(kvb::emu::g_mu);
  kvb::emu::g_allocs[reinterpret_cast<uintptr_t>(m)] = bytes;
  *p = m;
  return cudaSuccess;
}
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) { return cudaMalloc(p, bytes); }

cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  {
    std::lock_guard<std::mutex> lk(kvb::emu::g_mu);
    auto it = kvb::emu::g_allocs.find(reinterpret_cast<uintptr_t>(p));
    if (it == kvb::emu::g_allocs.end()) {
      std::fprintf(stderr, "kvbench CUDA emulator: cudaFree(%p): not a live allocation\n", p);
      return fail(cudaErrorInvalidValue);
    }
    kvb::emu::g_allocs.erase(it);
  }
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return cudaFree(p); }

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  if (const cudaError_t e = status(); e != cudaSuccess) return fail(e);
  if (bytes == 0) return cudaSuccess;
  using kvb::emu::in_alloc;
  bool ok = true;
  const char* which = "";
  switch (kind) {
    case cudaMemcpyHostToDevice: ok = in_alloc(dst, bytes), which = "destination"; break;
    case cudaMemcpyDeviceToHost: ok = in_alloc(src, bytes), which = "source"; break;
    case cudaMemcpyDeviceToDevice:
      ok = in_alloc(dst, bytes) && in_alloc(src, bytes), which = "source or destination";
      break;
    case cudaMemcpyHostToHost:
    case cudaMemcpyDefault: break;
    default: return fail(cudaErrorInvalidMemcpyDirection);
  }
  if (!ok) {
    std::fprintf(stderr, "kvbench CUDA emulator: cudaMemcpy of %zu bytes (kind %d): %s %s is not inside a live "
                 "device allocation\n", bytes, static_cast<int>(kind), which,
                 kvb::emu::hex(kind == cudaMemcpyDeviceToHost ? src : dst).c_str());
    return fail(cudaErrorInvalidValue);
  }
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  return cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) {
  if (const cudaError_t e = status(); e != cudaSuccess) return fail(e);
  if (bytes == 0) return cudaSuccess;
  if (!kvb::emu::in_alloc(p, bytes)) {
    std::fprintf(stderr, "kvbench CUDA emulator: cudaMemset of %zu bytes at %p: not inside a live allocation\n",
                 bytes, p);
    return fail(cudaErrorInvalidValue);
  }
  std::memset(p, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* p, int value, size_t bytes) { return cudaMemsetAsync(p, value, bytes, nullptr); }

cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags) {
  if (!s) return fail(cudaErrorInvalidValue);
  *s = new CUstream_st{static_cast<int>(flags)};
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return status() != cudaSuccess ? fail(status()) : cudaSuccess; }
cudaError_t cudaDeviceSynchronize() { return cudaStreamSynchronize(nullptr); }

cudaError_t cudaEventCreate(cudaEvent_t* e) {
  if (!e) return fail(cudaErrorInvalidValue);
  *e = new CUevent_st{};
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  if (!e) return fail(cudaErrorInvalidResourceHandle);
  e->t = std::chrono::steady_clock::now();  // launches ran synchronously: the host clock is the "device" time
  e->recorded = true;
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  if (!e) return fail(cudaErrorInvalidResourceHandle);
  return status() != cudaSuccess ? fail(status()) : cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  if (!ms || !a || !b || !a->recorded || !b->recorded) return fail(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(b->t - a->t).count();
  return cudaSuccess;
}

// KVB_EMU_NO_DEVICE=1 makes the emulator report no device (the --device cuda exit-4 path).
static bool emu_has_device() {
  const char* v = std::getenv("KVB_EMU_NO_DEVICE");
  return !(v && *v && std::string(v) != "0");
}

cudaError_t cudaGetDeviceCount(int* n) {
  if (!n) return fail(cudaErrorInvalidValue);
  *n = emu_has_device() ? 1 : 0;
  return *n ? cudaSuccess : fail(cudaErrorNoDevice);
}
cudaError_t cudaGetDevice(int* dev) {
  if (!dev) return fail(cudaErrorInvalidValue);
  *dev = 0;
  return emu_has_device() ? cudaSuccess : fail(cudaErrorNoDevice);
}
cudaError_t cudaSetDevice(int dev) {
  return dev == 0 && emu_has_device() ? cudaSuccess : fail(cudaErrorInvalidDevice);
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int dev) {
  if (!p) return fail(cudaErrorInvalidValue);
  if (dev != 0 || !emu_has_device()) return fail(cudaErrorInvalidDevice);
  *p = cudaDeviceProp{};
  std::snprintf(p->name, sizeof p->name, "kvbench CUDA emulator (host CPU, not a GPU)");
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  p->totalGlobalMem = pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) : 0;
  p->sharedMemPerBlock = kvb::emu::kDefaultSmem;
  p->sharedMemPerBlockOptin = kvb::emu::kOptinSmem;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = 1024, p->maxThreadsDim[1] = 1024, p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 2147483647, p->maxGridSize[1] = 65535, p->maxGridSize[2] = 65535;
  p->major = 9, p->minor = 0;  // the kernels' target (sm_90) as far as anything asks
  p->multiProcessorCount = 1;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  if (v) *v = 0;  // no driver
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  if (v) *v = 0;  // no CUDA runtime: the emulator
  return cudaSuccess;
}

cudaError_t cudaGetLastError() {
  const cudaError_t e = kvb::emu::t_last;
  kvb::emu::t_last = kvb::emu::g_sticky;  // a sticky fault is never cleared
  return e;
}
cudaError_t cudaPeekAtLastError() { return kvb::emu::t_last; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected (emulator: KVB_EMU_NO_DEVICE is set)";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure (emulator: see its message above)";
    default: return cudaGetErrorName(e);
  }
}
