#include "kvb/run/runner.h"

#include <chrono>
#include <cmath>
#include <filesystem>

#include "kvb/core/error.h"
#include "kvb/core/hash.h"
#include "kvb/core/progress.h"
#include "kvb/report/results_io.h"
#include "kvb/run/environment.h"
#include "kvb/run/evaluate.h"
#include "kvb/run/plan.h"
#include "kvb/run/record.h"
#include "kvb/run/resume.h"
#include "kvb/run/summary.h"

namespace kvb {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

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
  // Progress: cells done / total and the batch's cells; the ETA counts (sequence, layer) steps weighted by
  // the cells a batch evaluates at once, so it is shown in percent.
  auto weight = [&](const run::Batch& b) { return std::max<int64_t>(1, static_cast<int64_t>(b.cells.size())); };
  int64_t units = 0, cells_total = 0, cells_done = 0;
  for (const auto& c : w.cells)
    if (c.plan.selected) ++cells_total, cells_done += c.record.has_value();
  for (const auto& b : batches)
    if (b.streams)
      units += weight(b) * static_cast<int64_t>(w.datasets[b.dataset].eval_seqs.size() * w.datasets[b.dataset].layers.size());
  ProgressLine progress(opts.progress, units, ProgressStyle::kPercent);
  for (auto& b : batches) {
    const run::DatasetPlan& D = w.datasets[b.dataset];
    if (b.streams) {
      const bool dataset_pass = !w.results[b.dataset];  // this pass computes the ref_out check and fp16 reference
      run::DatasetAccum acc;
      const std::string cells =
          b.cells.empty() ? std::string("fp16 reference")
                          : b.cells[0]->plan.label + (b.cells.size() > 1 ? fmt::format(" +{}", b.cells.size() - 1) : "");
      run::evaluate_batch(cfg, D, b, dataset_pass ? &acc : nullptr, [&](const std::string& s) {
        progress.step(fmt::format("cells {}/{} | {} | {}", cells_done, cells_total, s, cells), weight(b));
      });
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
      ++cells_done;
    }
  }
  progress.finish();
}

/// What a fresh computation of this sweep writes, for --resume to check the persisted records against.
run::ResumeExpect resume_expect(const Config& cfg, const Sweep& w) {
  run::ResumeExpect e;
  for (const auto& D : w.datasets)
    e.datasets.push_back({D.spec->path_as_given, D.layers, run::ref_out_tolerance(D.reader->attrs().orig_dtype)});
  e.kendall = cfg.kendall;
  e.throughput = cfg.throughput;
  return e;
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
  const int resumed = opts.resume ? run::resume(w.cells, w.results, dirs, key, resume_expect(cfg, w)) : 0;
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
  RunSummary s = run::run_summary(doc, resumed, dirs.out);
  s.table = run::summary_table(doc);
  return s;
}

}  // namespace kvb
