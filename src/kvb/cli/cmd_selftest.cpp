#include <cstdio>
#include <string>

#include <fmt/format.h>

#include "kvb/cli/commands.h"
#include "kvb/core/error.h"
#include "kvb/core/registry.h"
#include "kvb/run/device_api.h"
#include "kvb/bench/selftest.h"

namespace kvb {

void add_selftest_command(CLI::App& root, std::vector<Command>& out) {
  struct Opts {
    std::string device = "auto";
    std::string codec;
    bool full = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = root.add_subcommand(
      "selftest",
      "Backend parity checks on this machine: with --device cuda every codec with a CUDA backend is encoded on the GPU "
      "and the CPU from the same seeded caches (head_dim 64/96/128/256, GQA, 1 to 4097 tokens; --full adds 32k and "
      "128k) and compared: stored bytes exactly, storage exactly, logits and outputs within named tolerances. With "
      "--device cpu the fast CPU paths are compared with the naive references. Exit 0 when every check passes, 1 "
      "otherwise, 4 when --device cuda finds no usable device.");
  sub->add_option("--device", o->device, "cpu | cuda | auto (default: cuda when a device is usable, else cpu)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  sub->add_option("--codec", o->codec, "only this codec");
  sub->add_flag("--full", o->full, "add the 32k and 128k-token cases (cuda)");
  out.push_back({sub, [o]() {
                   std::string err;
                   const int n = cuda::device_count(&err);
                   std::string device = o->device;
                   if (device == "cuda" && n == 0)
                     throw RuntimeError(fmt::format("selftest --device cuda: no usable CUDA device ({})", err));
                   if (device == "auto") {
                     device = n > 0 ? "cuda" : "cpu";
                     if (n == 0) std::printf("selftest: no usable CUDA device (%s); checking the CPU paths\n", err.c_str());
                   }
                   if (device == "cuda") {
                     cuda::GpuProperties gp;
                     std::string perr;
                     if (cuda::device_properties(0, &gp, &perr))
                       std::printf("selftest on cuda:0 %s (compute capability %d.%d)\n", gp.name.c_str(), gp.cc_major,
                                   gp.cc_minor);
                   }
                   if (!o->codec.empty()) (void)registry().at(o->codec);  // unknown -> UsageError listing the codecs
                   int failed = 0, passed = 0, skipped = 0;
                   std::printf("%-48s %-11s %-6s %s\n", "case", "compared", "result", "checks (value <= tol)");
                   for (const auto& c : selftest_cases(device, o->full)) {
                     if (!o->codec.empty() && c.codec != o->codec) continue;
                     const SelftestResult r = run_selftest_case(c, device);
                     std::string checks;
                     for (const auto& k : r.checks)
                       checks += fmt::format("{}={:.3g}{}{:.3g}{} ", k.name, k.value, k.pass ? "<=" : ">", k.tol,
                                             k.detail.empty() ? "" : " [" + k.detail + "]");
                     const char* verdict = r.skipped ? "skip" : r.pass() ? "PASS" : "FAIL";
                     if (r.skipped) ++skipped, checks = r.reason;
                     else if (r.pass()) ++passed;
                     else ++failed;
                     std::printf("%-48s %-11s %-6s %s\n", c.describe().c_str(), r.compared.c_str(), verdict, checks.c_str());
                   }
                   std::printf("selftest (%s): %d passed, %d failed, %d skipped\n", device.c_str(), passed, failed, skipped);
                   if (!o->codec.empty() && passed + failed + skipped == 0)
                     throw UsageError(fmt::format("selftest --codec {}: no selftest case for this codec on {} (with "
                                                  "--device cuda only codecs with a CUDA backend have cases)",
                                                  o->codec, device));
                   return failed == 0 && passed > 0 ? 0 : 1;
                 }});
}

}  // namespace kvb
