#include "kvb/run/environment.h"

#include <H5public.h>
#include <sys/utsname.h>

#include <chrono>
#include <ctime>
#include <fstream>
#include <thread>

#include <fmt/format.h>

#include "kernels/cpu/attend_rows.h"
#include "kernels/cpu/row_kernels.h"
#include "kvb/bench/peak.h"
#include "kvb/run/device_api.h"
#include "kvb/version.h"

namespace kvb {

std::string version_string() {
  return fmt::format("kvbench {} (git {}{}, {} build, {}{})", KVB_VERSION, KVB_GIT_SHA, KVB_GIT_DIRTY ? "-dirty" : "",
                     KVB_BUILD_TYPE, KVB_CXX_COMPILER,
                     KVB_CUDA_EMULATOR_BUILD ? ", CUDA emulated on the host" : KVB_CUDA_BUILT ? ", CUDA" : ", CPU only");
}

Json build_info_json() {
  Json j{{"version", KVB_VERSION},
         {"git_sha", KVB_GIT_SHA},
         {"git_dirty", static_cast<bool>(KVB_GIT_DIRTY)},
         {"build_type", KVB_BUILD_TYPE},
         {"compiler", KVB_CXX_COMPILER},
         {"cuda_built", static_cast<bool>(KVB_CUDA_BUILT)},
         {"cuda_emulated", static_cast<bool>(KVB_CUDA_EMULATOR_BUILD)}};
  if (std::string(KVB_BUILD_TYPE) != "Release")
    j["warning"] = "not a Release build: throughput numbers are not representative";
  if (KVB_CUDA_EMULATOR_BUILD)  // src/kvb/cuda/emu: kernels run on the host, one CUDA thread at a time
    j["warning"] = "CUDA emulator build (KVB_CUDA_EMULATE): device results check correctness only, device "
                   "throughput is host time of emulated kernels";
  return j;
}

std::string utc_now_iso8601() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

namespace {
std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto pos = line.find(':');
      if (pos != std::string::npos) return line.substr(pos + 2);
    }
  }
  return "unknown";
}
}  // namespace

Json environment_json(int threads) {
  Json j;
  j["cpu_model"] = cpu_model();
  j["hardware_threads"] = std::thread::hardware_concurrency();
  j["threads"] = threads;
  // Which CPU paths runtime dispatch chose (kernels/cpu/row_kernels.h; the KVB_CPU_CLONES loops take the
  // x86-64-v3 clone exactly when avx2, fma and f16c are all listed).
  j["simd_features"] = cpu_simd_features();
  j["cpu_row_kernels"] = kernels::row_kernels_switched().name;
  // The fused attention kernels (kernels/cpu/attend_rows.h) the GQA calls take, by stored row codec at head_dim 128
  // (kU*: group 32, the int codec's default) and, for fp16, at a head_dim that is a multiple of 8 only.
  {
    using kernels::RowCodec;
    Json k = Json::object();
    for (RowCodec c : {RowCodec::kF16, RowCodec::kE4M3, RowCodec::kE5M2, RowCodec::kU8, RowCodec::kU4, RowCodec::kU2})
      k[fmt::format("{} head_dim 128{}", kernels::row_codec_name(c), c >= RowCodec::kU8 ? " group 32" : "")] =
          kernels::attend_rows_path(c, 128, 32);
    k["f16 head_dim 8"] = kernels::attend_rows_path(RowCodec::kF16, 8);
    for (RowCodec c : {RowCodec::kC4, RowCodec::kC2})  // kivi: per-channel keys (blocks of 32 tokens), per-token values
      k[fmt::format("{} keys + u{} values head_dim 128 group 32", kernels::row_codec_name(c), c == RowCodec::kC4 ? 4 : 2)] =
          kernels::attend_rows_path({c, nullptr, nullptr, 32}, {c == RowCodec::kC4 ? RowCodec::kU4 : RowCodec::kU2, nullptr, nullptr, 32}, 128);
    j["fused_attend_kernel"] = std::move(k);
  }
  utsname u{};
  if (uname(&u) == 0) j["os"] = fmt::format("{} {} {}", u.sysname, u.release, u.machine);
  j["libraries"] = {{"hdf5", H5_VERS_INFO},
                    {"fmt", fmt::format("{}.{}.{}", FMT_VERSION / 10000, FMT_VERSION / 100 % 100, FMT_VERSION % 100)},
                    {"nlohmann_json", fmt::format("{}.{}.{}", NLOHMANN_JSON_VERSION_MAJOR, NLOHMANN_JSON_VERSION_MINOR,
                                                  NLOHMANN_JSON_VERSION_PATCH)}};
  std::string err;
  const int n = cuda::device_count(&err);
  Json gpus = Json::array();
  for (int i = 0; i < n; ++i) {
    cuda::GpuProperties p;
    if (!cuda::device_properties(i, &p, &err)) continue;
    gpus.push_back({{"name", p.name},
                    {"sm_count", p.sm_count},
                    {"compute_capability", fmt::format("{}.{}", p.cc_major, p.cc_minor)},
                    {"memory_bytes", p.global_mem_bytes},
                    {"l2_bytes", p.l2_bytes},
                    {"driver_version", p.driver_version},
                    {"runtime_version", p.runtime_version}});
  }
  j["gpus"] = gpus;
  if (n == 0) j["gpu_note"] = err;
  return j;
}

}  // namespace kvb
