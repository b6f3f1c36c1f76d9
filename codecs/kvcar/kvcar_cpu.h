#pragma once
/// The folded float32 inference weights of one kvcar autoencoder (kvcar_fold_cpu), shared by the CPU path
/// (kvcar_cpu.cpp) and the CUDA layer (kvcar_gpu.cpp), which uploads them as they are.
#include <cstdint>
#include <vector>

#include "codecs/common/baseline.h"

namespace kvb::codecs {

struct CpuAe {
  int D = 0, h = 0, dl = 0;
  float slope = 0.01f;
  std::vector<float> w1, c1;  ///< [h, D], [h]: standardization and BatchNorm folded in
  std::vector<float> w2, c2;  ///< [dl, h], [dl]
  std::vector<float> w3, c3;  ///< [h, dl], [h]: BatchNorm folded in
  std::vector<float> w4, c4;  ///< [D, h], [D]: de-standardization folded in
  uint64_t bytes() const {
    return bytes_of(w1) + bytes_of(c1) + bytes_of(w2) + bytes_of(c2) + bytes_of(w3) + bytes_of(c3) + bytes_of(w4) +
           bytes_of(c4);
  }
};

}  // namespace kvb::codecs
