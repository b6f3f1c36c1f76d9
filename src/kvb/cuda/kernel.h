#pragma once
/// What a .cu file needs beyond CUDA C++ so that the same source builds with nvcc and with kvbench's CUDA
/// emulator (src/kvb/cuda/emu/cuda_runtime.h, build option KVB_CUDA_EMULATE), which runs kernels on the host:
///   KVB_LAUNCH(grid, block, smem, stream, kernel)(args...)  is  kernel<<<grid, block, smem, stream>>>(args...)
///     (the kernel comes last so that template arguments with commas need no parentheses);
///   KVB_DYNAMIC_SHARED(T, name);  is  extern __shared__ T name[];  (a T* in the emulator).
#include <cuda_runtime.h>

#if defined(KVB_CUDA_EMULATED)
#define KVB_LAUNCH(grid, block, smem, stream, ...) \
  ::kvb::emu::launch(#__VA_ARGS__, (grid), (block), (smem), (stream), __VA_ARGS__)
#define KVB_DYNAMIC_SHARED(T, name) T* const name = static_cast<T*>(::kvb::emu::dynamic_shared())
#else
#define KVB_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<(grid), (block), (smem), (stream)>>>
#define KVB_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif
