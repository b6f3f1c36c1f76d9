#include "kvb/run/runner.h"

#include <chrono>
#include <cmath>
#include <filesystem>

#include "kvb/core/error.h"
#include "kvb/core/hash.h"
#include "kvb/report/results_io.h"
#include "kvb/run/environment.h"
#include "kvb/run/evaluate.h"
#include "kvb/run/plan.h"
#include "kvb/run/record.h"

namespace kvb {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

std::string fmt_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  if (s < 60) return fmt::format("{:.0f}s", s);
  return fmt::format("{:.0f}m{:02.0f}s", std::floor(s / 60), std::fmod(s, 60.0));
}

class Progress {
 public:
  Progress(bool on, int64_t total) : on_(on), total_(std::max<int64_t>(total, 1)), start_(Clock::now()) {}
  void step(const std::string& what) {
    ++done_;
    if (!on_) return;
    const double el = std::chrono::duration<double>(Clock::now() - start_).count();
    const double eta = done_ > 0 ? el / done_ * (total_ - done_) : NAN;
    std::fprintf(stderr, "\r\033[K[%lld/%lld] %s  elapsed %s  ETA %s", static_cast<long long>(done_),
                 static_cast<long long>(total_), what.c_str(), fmt_duration(el).c_str(), fmt_duration(eta).c_str());
    std::fflush(stderr);
  }
  void finish() {
    if (on_) std::fprintf(stderr, "\n");
  }

 private:
  bool on_;
  int64_t total_, done_ = 0;
  Clock::time_point start_;
};

/// The whole sweep's state between the plan and the results document.
struct Sweep {
  std::vector<run::DatasetPlan> datasets;
  std::vector<std::optional<DatasetResult>> results;  ///< per dataset, once computed or resumed
  std::vector<run::Cell> cells;
};

/// Evaluates the batches in order, persisting every cell's record (and each dataset's) as it is finished.
void evaluate_all(const Config& cfg, const RunOptions& opts, Sweep& w, const run::RecordDirs& dirs,
                  const std::string& key) {
  std::vector<run::Batch> batches = run::make_batches(cfg, w.cells, w.results);
  int64_t steps = 0;
  for (const auto& b : batches)
    if (b.streams) steps += static_cast<int64_t>(w.datasets[b.dataset].eval_seqs.size() * w.datasets[b.dataset].layers.size());
  Progress progress(opts.progress, steps);
  for (auto& b : batches) {
    const run::DatasetPlan& D = w.datasets[b.dataset];
    if (b.streams) {
      const bool dataset_pass = !w.results[b.dataset];  // this pass computes the ref_out check and fp16 reference
      run::DatasetAccum acc;
      run::evaluate_batch(cfg, D, b, dataset_pass ? &acc : nullptr, [&](const std::string& s) { progress.step(s); });
      if (dataset_pass) {
        w.results[b.dataset] = run::dataset_result(acc, D.reader->attrs().orig_dtype);
        write_record_file((fs::path(dirs.datasets) / fmt::format("{}.json", b.dataset)).string(), key, b.dataset,
                          "dataset", w.results[b.dataset]->to_json());
      }
    }
    for (run::Cell* c : b.cells) {
      c->record = run::cell_record(*c, D, w.results[b.dataset], cfg);
      c->live.codec.reset();
      write_record_file((fs::path(dirs.cells) / fmt::format("{}.json", c->plan.index)).string(), key, c->plan.index,
                        "cell", c->record->to_json());
    }
  }
  progress.finish();
}

}  // namespace

std::string run_key(const Config& cfg) {
  Json r = cfg.resolved();
  for (const char* k : {"output", "device", "threads"}) r.erase(k);
  const Json b = build_info_json();
  return fmt::format("{:016x}", run::run_hash(r.dump() + "\n" + b["git_sha"].get<std::string>()));
}

RunSummary run_benchmark(const Config& cfg, const RunOptions& opts) {
  const auto t_start = Clock::now();
  const std::string started_utc = utc_now_iso8601();
  const run::DeviceChoice dev = run::choose_device(cfg, opts);
  Sweep w;
  w.datasets = run::open_datasets(cfg);
  w.results.resize(w.datasets.size());
  w.cells = run::expand_cells(cfg, w.datasets, dev);
  const run::RecordDirs dirs = run::make_record_dirs(cfg, opts);
  const std::string key = run_key(cfg);
  run::select_shard(w.cells, opts);
  const int resumed = opts.resume ? run::resume(w.cells, w.results, dirs, key) : 0;
  evaluate_all(cfg, opts, w, dirs, key);

  ResultDoc doc = run::results_doc(cfg, opts, dev, key, started_utc, w.cells, resumed);
  doc.config = cfg.resolved();
  for (size_t di = 0; di < w.datasets.size(); ++di) {
    KVB_ASSERT(w.results[di].has_value());
    doc.datasets.push_back(run::dataset_record(w.datasets[di], *w.results[di]));
  }
  doc.summary = SummaryRecord::of(doc.cells);
  doc.run.duration_s = std::chrono::duration<double>(Clock::now() - t_start).count();
  write_results_dir(dirs.out, doc);
  return run::run_summary(doc, resumed, dirs.out);
}

}  // namespace kvb
