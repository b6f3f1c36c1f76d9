#include "kvb/run/plan.h"

#include <omp.h>

#include <algorithm>
#include <filesystem>

#include "kvb/core/error.h"
#include "kvb/run/device_api.h"

namespace kvb::run {
namespace fs = std::filesystem;

DeviceChoice choose_device(const Config& cfg, const RunOptions& opts) {
  DeviceChoice d;
  d.requested = opts.device.empty() ? cfg.device : opts.device;
  if (d.requested != "cpu" && d.requested != "cuda" && d.requested != "auto")
    throw UsageError(fmt::format("--device: expected one of: cpu, cuda, auto; found \"{}\"", d.requested));
  std::string cuda_err;
  const int n_gpus = cuda::device_count(&cuda_err);
  if (d.requested == "cuda" && n_gpus == 0)
    throw RuntimeError(fmt::format("--device cuda: no usable CUDA device ({})", cuda_err));
  if (d.requested == "auto")
    d.note = n_gpus > 0 ? "auto: a CUDA device is present; codecs with a CUDA backend run there, the rest on the CPU"
                        : fmt::format("auto: no usable CUDA device ({}); running on the CPU", cuda_err);
  // cuda, or auto with a usable device: codecs with a CUDA backend run on the GPU (the rest on the CPU).
  d.use_gpu = n_gpus > 0 && d.requested != "cpu";
  const int threads_req = opts.threads >= 0 ? opts.threads : cfg.threads;
  d.threads = threads_req > 0 ? threads_req : omp_get_num_procs();
  omp_set_num_threads(d.threads);
  return d;
}

namespace {

/// Indices of the configured sequences (all when none are named).
std::vector<size_t> chosen_sequences(const DatasetPlan& D, size_t di) {
  const auto& seqs = D.reader->sequences();
  std::vector<size_t> chosen;
  if (D.spec->sequences.empty()) {
    for (size_t i = 0; i < seqs.size(); ++i) chosen.push_back(i);
    return chosen;
  }
  for (const auto& id : D.spec->sequences) {
    size_t found = seqs.size();
    for (size_t i = 0; i < seqs.size(); ++i)
      if (seqs[i].id == id) found = i;
    if (found == seqs.size()) {
      std::string ids;
      for (const auto& s : seqs) ids += (ids.empty() ? "" : ", ") + s.id;
      throw UsageError(fmt::format("datasets[{}].sequences: {} has no sequence \"{}\"; it has: {}", di, D.spec->path, id, ids));
    }
    chosen.push_back(found);
  }
  return chosen;
}

void split_calibration(DatasetPlan& D, const std::vector<size_t>& chosen, int calibration_sequences) {
  int ncal = calibration_sequences;
  if (ncal < 0) ncal = chosen.size() >= 2 ? 1 : 0;
  if (ncal > 0 && static_cast<size_t>(ncal) >= chosen.size())
    throw UsageError(fmt::format("calibration.sequences: {} leaves no sequence of {} to evaluate (it selects {})", ncal,
                                 D.spec->path, chosen.size()));
  D.calib_seqs.assign(chosen.begin(), chosen.begin() + ncal);
  D.eval_seqs.assign(chosen.begin() + ncal, chosen.end());
}

void select_layers(DatasetPlan& D, size_t di) {
  const int n_layers = D.reader->attrs().shape.n_layers;
  if (D.spec->layers.empty()) {
    for (int l = 0; l < n_layers; ++l) D.layers.push_back(l);
    return;
  }
  for (int l : D.spec->layers) {
    if (l >= n_layers)
      throw UsageError(fmt::format("datasets[{}].layers: layer {} does not exist in {} (n_layers = {})", di, l,
                                   D.spec->path, n_layers));
    D.layers.push_back(l);
  }
}

/// Top-k recall needs k <= C on every evaluated (sequence, layer).
void check_topk(const DatasetPlan& D, int64_t topk) {
  const auto& seqs = D.reader->sequences();
  for (size_t si : D.eval_seqs) {
    for (int l : D.layers) {
      const auto& s = seqs[si];
      const int64_t w = s.sliding_window.empty() ? 0 : s.sliding_window[l];
      const int64_t C = (w > 0 && w < s.context_len) ? w : s.context_len;
      if (topk > C)
        throw UsageError(fmt::format("metrics.topk: {} exceeds the {} cached tokens of sequence \"{}\" layer {} in {} "
                                     "(top-k recall needs k <= C); set metrics.topk <= {}",
                                     topk, C, s.id, l, D.spec->path, C));
    }
  }
}

/// Resolves a cell's params (budget, preset or explicit) and builds its codec on the device it runs on.
void resolve_cell(Cell& c, const ModelShape& shape, const DeviceChoice& dev) {
  CellPlan& p = c.plan;
  CellLive& live = c.live;
  const CodecEntry& entry = *p.entry;
  const CodecSpec& spec = *p.spec;
  try {
    if (p.budget) {
      p.bits_target = p.budget->target_bits(shape.head_dim);
      auto r = resolve_budget(entry, p.bits_target, spec.params, shape.head_dim, spec.where + ".params");
      if (!r.ok) {
        c.outcome.set(CellStatus::kSkipped, r.reason);
        p.params = spec.params;
        p.label = entry.info.name;
      } else {
        p.params = r.params;
        p.candidate_bits = r.candidate_bits;
      }
    } else if (!spec.preset.empty()) {
      p.params = resolve_preset(entry, spec.preset, spec.params, spec.where);
    } else {
      p.params = resolve_params(entry.info.params, spec.params, spec.where + ".params");
    }
    if (c.outcome.ok()) {
      p.label = entry.label(p.params);
      const bool on_gpu = dev.use_gpu && static_cast<bool>(entry.make_cuda);
      live.codec = on_gpu ? entry.make_cuda(p.params, shape) : entry.make_cpu(p.params, shape);
      p.device = on_gpu ? "cuda" : "cpu";
    }
  } catch (const Unsupported& e) {
    c.outcome.set(CellStatus::kSkipped, e.what());
    if (p.label.empty()) p.label = entry.info.name;
  }
  if (c.outcome.ok() && dev.requested == "cuda") {
    const auto& b = entry.info.backends;
    if (std::find(b.begin(), b.end(), "cuda") == b.end()) {
      c.outcome.set(CellStatus::kSkipped,
                    fmt::format("--device cuda: codec \"{}\" has no CUDA implementation yet (backends: cpu)", entry.info.name));
      live.codec.reset();
    }
  }
}

}  // namespace

std::vector<DatasetPlan> open_datasets(const Config& cfg) {
  std::vector<DatasetPlan> out(cfg.datasets.size());
  for (size_t di = 0; di < cfg.datasets.size(); ++di) {
    auto& D = out[di];
    D.spec = &cfg.datasets[di];
    D.reader = std::make_unique<KvDumpReader>(D.spec->path);
    split_calibration(D, chosen_sequences(D, di), cfg.calibration_sequences);
    select_layers(D, di);
    check_topk(D, cfg.topk);
  }
  return out;
}

std::vector<Cell> expand_cells(const Config& cfg, const std::vector<DatasetPlan>& datasets, const DeviceChoice& dev) {
  std::vector<ModelShape> shapes;
  for (const auto& D : datasets) shapes.push_back(D.reader->attrs().shape);
  std::vector<Cell> cells = expand_cells(cfg, shapes, dev);
  skip_cells_without_obs(cells, datasets);
  return cells;
}

std::string missing_obs_reason(const CodecEntry& entry, const std::vector<SequenceInfo>& seqs,
                               const std::vector<size_t>& eval_seqs, const std::string& dump_path) {
  if (!entry.info.needs_obs_queries) return {};
  std::vector<std::string> lacking;
  for (size_t si : eval_seqs)
    if (si < seqs.size() && !seqs[si].has_obs()) lacking.push_back(seqs[si].id);
  if (lacking.empty()) return {};
  std::string which;
  if (lacking.size() < eval_seqs.size()) {
    // Bounded: name the first few sequences.
    constexpr size_t kNamed = 4;
    std::string ids;
    for (size_t i = 0; i < std::min(lacking.size(), kNamed); ++i)
      ids += fmt::format("{}\"{}\"", i ? ", " : "", lacking[i]);
    if (lacking.size() > kNamed) ids += fmt::format(" and {} more", lacking.size() - kNamed);
    which = fmt::format(" for {} of its {} evaluated sequences ({})", lacking.size(), eval_seqs.size(), ids);
  }
  return fmt::format("{} scores the cache with the prompt's observation queries (kvdump obs_queries, "
                     "docs/dump-format.md §1.2); {} has none{}: record them with `kvbench gen|capture --obs-window W` "
                     "or scripts/record_kv.py --obs-window W",
                     entry.info.name, dump_path, which);
}

void skip_cells_without_obs(std::vector<Cell>& cells, const std::vector<DatasetPlan>& datasets) {
  for (auto& c : cells) {
    if (!c.outcome.ok() || c.plan.dataset >= datasets.size()) continue;
    const DatasetPlan& D = datasets[c.plan.dataset];
    std::string why = missing_obs_reason(*c.plan.entry, D.reader->sequences(), D.eval_seqs, D.spec->path);
    if (why.empty()) continue;
    c.outcome.set(CellStatus::kSkipped, std::move(why));
    c.live.codec.reset();
  }
}

std::vector<Cell> expand_cells(const Config& cfg, const std::vector<ModelShape>& shapes, const DeviceChoice& dev) {
  std::vector<Cell> cells;
  for (size_t di = 0; di < shapes.size(); ++di) {
    const ModelShape& shape = shapes[di];
    for (size_t ci = 0; ci < cfg.codecs.size(); ++ci) {
      const auto& spec = cfg.codecs[ci];
      const CodecEntry& entry = registry().at(spec.codec);
      auto add_cell = [&](std::optional<Budget> budget) {
        Cell c;
        c.plan.dataset = di;
        c.plan.spec_idx = ci;
        c.plan.index = cells.size();
        c.plan.entry = &entry;
        c.plan.spec = &spec;
        c.plan.budget = budget;
        resolve_cell(c, shape, dev);
        cells.push_back(std::move(c));
      };
      if (spec.budgets.empty()) add_cell(std::nullopt);
      for (const auto& b : spec.budgets) add_cell(b);
    }
  }
  return cells;
}

void select_shard(std::vector<Cell>& cells, const RunOptions& opts) {
  for (auto& c : cells)
    c.plan.selected = opts.shard_n <= 0 || static_cast<int>(c.plan.index % opts.shard_n) == opts.shard_k - 1;
}

RecordDirs make_record_dirs(const Config& cfg, const RunOptions& opts) {
  RecordDirs d;
  d.out = opts.output_dir.empty() ? (fs::path("results") / cfg.name).string() : opts.output_dir;
  d.cells = (fs::path(d.out) / "cells").string();
  d.datasets = (fs::path(d.out) / "datasets").string();
  std::error_code ec;
  fs::create_directories(d.cells, ec);
  if (!ec) fs::create_directories(d.datasets, ec);
  if (ec) throw RuntimeError(fmt::format("{}: cannot create the results directory: {}", d.out, ec.message()));
  return d;
}

std::vector<Batch> make_batches(const Config& cfg, std::vector<Cell>& cells,
                                const std::vector<std::optional<DatasetResult>>& results) {
  // Each batch streams the dataset's (sequence, layer) pairs on its own, so its cells are finished (and
  // persisted) as soon as the batch ends. The data is re-read and the exact reference recomputed per batch:
  // that costs a few extra reads and float64 attentions, which is acceptable next to the codecs' own work,
  // and keeps every cell's numbers identical to a single pass (cells never depend on each other).
  std::vector<Batch> batches;
  for (size_t di = 0; di < results.size(); ++di) {
    bool need_dataset = !results[di].has_value();
    for (size_t ci = 0; ci < cfg.codecs.size(); ++ci) {
      Batch b;
      b.dataset = di;
      for (auto& c : cells)
        if (c.plan.dataset == di && c.plan.spec_idx == ci && c.plan.selected && !c.record) b.cells.push_back(&c);
      if (b.cells.empty()) continue;
      for (Cell* c : b.cells) b.streams = b.streams || c->outcome.ok();
      if (need_dataset) b.streams = true;
      need_dataset = false;
      batches.push_back(std::move(b));
    }
    if (need_dataset) batches.push_back(Batch{di, {}, true});
  }
  return batches;
}

}  // namespace kvb::run
