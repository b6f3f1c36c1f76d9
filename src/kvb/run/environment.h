#pragma once
/// Provenance for results.json: build info, host, libraries, devices.
#include <string>

#include "kvb/core/params.h"

namespace kvb {

/// kvbench version, git revision and dirty flag, build type, compiler, CUDA built or not.
Json build_info_json();
/// CPU model, cores, threads used, OS, library versions, CUDA devices.
Json environment_json(int threads);
/// "2026-11-23T17:30:00Z"
std::string utc_now_iso8601();
/// "kvbench 0.1.0 (git abc123, Release)"
std::string version_string();

}  // namespace kvb
