// Hostile inputs through `kvbench run` (docs/errors.md §4): degenerate shapes run or skip cleanly with no
// NaN in the results; malformed dumps and configs give their exit codes. Never a crash.
#include <gtest/gtest.h>

#include <hdf5.h>
#include <unistd.h>

#include <cmath>
#include <functional>
#include <type_traits>

#include "kvb/core/rng.h"
#include "kvb/io/kvdump.h"
#include "test_util.h"

namespace {

using kvbtest::TempDir;
namespace fs = std::filesystem;
using nlohmann::json;

/// Write a float32 dump with random K/V/Q of the given shape (one sequence, one layer).
void write_dump(const std::string& path, int heads, int kv_heads, int head_dim, int64_t C, int64_t Q, uint64_t seed,
                float scale = 1.f, bool random_ref_out = false) {
  kvb::DumpAttrs at;
  at.model = "hostile";
  at.shape = {1, heads, kv_heads, head_dim};
  at.softmax_scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  at.rope_style = "none";
  at.rope_applied = 0;
  at.orig_dtype = "float32";
  kvb::SequenceData s;
  s.id = "s0";
  s.n_tokens = C + Q;
  s.context_len = C;
  for (int64_t i = 0; i < Q; ++i) s.query_positions.push_back(C + i);
  s.layers.resize(1);
  kvb::Rng rng(seed);
  auto fill = [&](std::vector<float>& v, size_t n) {
    v.resize(n);
    for (auto& x : v) x = static_cast<float>(rng.normal()) * scale;
  };
  fill(s.layers[0].keys, static_cast<size_t>(kv_heads) * (C + Q) * head_dim);
  fill(s.layers[0].values, static_cast<size_t>(kv_heads) * (C + Q) * head_dim);
  fill(s.layers[0].queries, static_cast<size_t>(heads) * Q * head_dim);
  if (random_ref_out) fill(s.layers[0].ref_out, static_cast<size_t>(heads) * Q * head_dim);  // disagrees
  kvb::WriterOptions wo;
  wo.dtype = kvb::DType::kFloat32;
  kvb::KvDumpWriter w(path, at, wo);
  w.write_sequence(s);
  w.close();
}

json all_codecs_cfg(const std::string& dump, int64_t topk) {
  return json{{"name", "hostile"},
              {"datasets", {{{"path", dump}}}},
              {"codecs",
               {{{"codec", "fp16"}},
                {{"codec", "fp8"}, {"params", {{"format", "e5m2"}}}},
                {{"codec", "fp8"}},
                {{"codec", "int"}, {"bits", {3, 5, 9}}},
                {{"codec", "int"}, {"params", {{"code_bits", 4}, {"group_size", 32}}}},
                {{"codec", "kivi"}, {"bits", {3, 5}}},
                {{"codec", "kivi"}, {"preset", "paper-2"}}}},
              {"metrics", {{"topk", topk}}},
              {"repeats", 1},
              {"min_time_s", 0.0}};
}

/// Every number in the results must be finite (nlohmann writes NaN/Inf as null, so look for nulls in
/// numeric fields of ok cells) and every cell ok or skipped with a reason.
void expect_clean_results(const json& doc) {
  for (const auto& c : doc.at("cells")) {
    SCOPED_TRACE(c.at("label").get<std::string>());
    const std::string st = c.at("status");
    ASSERT_TRUE(st == "ok" || st == "skipped") << c.dump();
    if (st == "skipped") {
      EXPECT_FALSE(c.at("reason").get<std::string>().empty());
      continue;
    }
    for (const auto& [name, agg] : c.at("fidelity").items()) {
      if (agg.is_null()) continue;
      for (const auto& [k, v] : agg.items()) EXPECT_TRUE(v.is_number()) << name << "." << k << " = " << v.dump();
    }
    for (const char* k : {"bytes_per_token", "bits_per_element", "bits_per_element_with_fixed", "compression_ratio"})
      EXPECT_TRUE(c["storage"][k].is_number()) << k;
  }
}

struct Shape {
  int heads, kv_heads, head_dim;
  int64_t C, Q;
  float scale;
};

TEST(Hostile, DegenerateShapesRunCleanly) {
  const Shape shapes[] = {
      {1, 1, 1, 5, 1, 1.f},        // head_dim 1
      {2, 1, 1024, 40, 2, 1.f},    // head_dim 1024 (the largest the reader accepts)
      {3, 3, 96, 1, 1, 1.f},       // C = 1
      {4, 1, 64, 7, 3, 1.f},       // C = 7, GQA 4:1
      {2, 2, 64, 130, 2, 300.f},   // huge values: logits of order 1e4 * 8
      {2, 2, 64, 130, 2, 1e-20f},  // tiny values (fp16/fp8 underflow)
  };
  for (const auto& s : shapes) {
    const std::string cfgs = "heads " + std::to_string(s.heads) + " kv " + std::to_string(s.kv_heads) + " d " +
                             std::to_string(s.head_dim) + " C " + std::to_string(s.C) + " Q " + std::to_string(s.Q) +
                             " scale " + std::to_string(s.scale);
    SCOPED_TRACE(cfgs);
    TempDir tmp("hostile");
    write_dump(tmp / "d.h5", s.heads, s.kv_heads, s.head_dim, s.C, s.Q, 17);
    kvbtest::spit(tmp.path / "cfg.json", all_codecs_cfg(tmp / "d.h5", 1).dump());
    const auto r = kvbtest::kvbench("run '" + (tmp / "cfg.json") + "' -q --output '" + (tmp / "out") + "'", tmp);
    ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
    expect_clean_results(json::parse(kvbtest::slurp(tmp.path / "out" / "results.json")));
  }
}

TEST(Hostile, WrongJsonTypesAtEveryLevelExit2) {
  TempDir tmp("hostile-json");
  for (const char* text : {"[]", "3", "\"x\"", "null", "{\"datasets\": 1, \"codecs\": []}",
                           "{\"datasets\": [3], \"codecs\": [{\"codec\": \"int\"}]}",
                           "{\"datasets\": [{\"path\": 1}], \"codecs\": [{\"codec\": \"int\"}]}",
                           "{\"datasets\": [{\"path\": \"x\"}], \"codecs\": [\"int\"]}",
                           "{\"datasets\": [{\"path\": \"x\"}], \"codecs\": [{\"codec\": 5}]}",
                           "{\"datasets\": [{\"path\": \"x\", \"max_queries\": -1}], \"codecs\": [{\"codec\": \"int\"}]}",
                           "{\"datasets\": [{\"path\": \"x\"}], \"codecs\": [{\"codec\": \"int\", \"params\": []}]}"}) {
    SCOPED_TRACE(text);
    kvbtest::spit(tmp.path / "c.json", text);
    const auto r = kvbtest::kvbench("run '" + (tmp / "c.json") + "'", tmp);
    EXPECT_EQ(r.code, 2) << kvbtest::describe(r);
    EXPECT_FALSE(r.err.empty());
  }
}


// ---------------------------------------------------------------------------------------------------------
// The hostile-input table (docs/errors.md §4, README "Errors and exit codes"): each case builds its inputs in
// a fresh directory, runs one kvbench command, and checks the exit code, a fragment of the message, that
// the message is bounded, and that no results file and no temporary file is left behind by a failed run.

/// HDF5 surgery on a valid dump: the reader must name what was broken.
struct H5Edit {
  hid_t f;
  explicit H5Edit(const std::string& path) : f(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT)) {
    EXPECT_GE(f, 0) << path;
  }
  ~H5Edit() { H5Fclose(f); }
  void del_attr(const char* obj, const char* name) { EXPECT_GE(H5Adelete_by_name(f, obj, name, H5P_DEFAULT), 0); }
  /// Replace (or add) a scalar numeric attribute, stored as T (double or int64_t).
  template <typename T>
  void set_scalar(const char* obj, const char* name, T v) {
    const hid_t type = std::is_same_v<T, double> ? H5T_NATIVE_DOUBLE : H5T_NATIVE_INT64;
    H5Adelete_by_name(f, obj, name, H5P_DEFAULT);
    const hid_t sp = H5Screate(H5S_SCALAR);
    const hid_t a = H5Acreate_by_name(f, obj, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    EXPECT_GE(H5Awrite(a, type, &v), 0);
    H5Aclose(a);
    H5Sclose(sp);
  }
  void set_double(const char* obj, const char* name, double v) { set_scalar<double>(obj, name, v); }
  void set_int(const char* obj, const char* name, int64_t v) { set_scalar<int64_t>(obj, name, v); }
  void set_string(const char* obj, const char* name, const std::string& v) {
    H5Adelete_by_name(f, obj, name, H5P_DEFAULT);
    const hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, v.size());
    const hid_t sp = H5Screate(H5S_SCALAR);
    const hid_t a = H5Acreate_by_name(f, obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    EXPECT_GE(H5Awrite(a, t, v.data()), 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
  }
  void del(const char* path) { EXPECT_GE(H5Ldelete(f, path, H5P_DEFAULT), 0) << path; }
  /// Replace a float32 dataset by one of the given dims (zeros).
  void replace_f32(const char* path, std::vector<hsize_t> dims) {
    del(path);
    const hid_t sp = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
    const hid_t d = H5Dcreate2(f, path, H5T_NATIVE_FLOAT, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    size_t n = 1;
    for (auto x : dims) n *= x;
    std::vector<float> zeros(n, 0.f);
    EXPECT_GE(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros.data()), 0);
    H5Dclose(d);
    H5Sclose(sp);
  }
  /// Set element `i` of a dataset read and written as T (float or int64_t).
  template <typename T>
  void poke(const char* path, size_t i, T v) {
    const hid_t mem = std::is_same_v<T, float> ? H5T_NATIVE_FLOAT : H5T_NATIVE_INT64;
    const hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
    const hid_t sp = H5Dget_space(d);
    std::vector<T> all(static_cast<size_t>(H5Sget_simple_extent_npoints(sp)));
    EXPECT_GE(H5Dread(d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, all.data()), 0);
    all.at(i) = v;
    EXPECT_GE(H5Dwrite(d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, all.data()), 0);
    H5Sclose(sp);
    H5Dclose(d);
  }
};

/// A results directory of a real (tiny) run, made once per test binary and copied into each case.
const std::string& tiny_results_json() {
  static const std::string text = [] {
    TempDir tmp("hostile-results");
    write_dump(tmp / "d.h5", 2, 1, 16, 20, 2, 3);
    kvbtest::spit(tmp.path / "cfg.json", json{{"datasets", {{{"path", tmp / "d.h5"}}}},
                                               {"codecs", {{{"codec", "int"}, {"bits", {4}}}}},
                                               {"repeats", 1},
                                               {"min_time_s", 0.0},
                                               {"metrics", {{"topk", 4}}}}
                                              .dump());
    const auto r = kvbtest::kvbench("run '" + (tmp / "cfg.json") + "' -q -o '" + (tmp / "out") + "'", tmp);
    EXPECT_EQ(r.code, 0) << kvbtest::describe(r);
    return kvbtest::slurp(tmp.path / "out" / "results.json");
  }();
  return text;
}

std::string nested(int depth) { return std::string(static_cast<size_t>(depth), '[') + std::string(static_cast<size_t>(depth), ']'); }

/// A case: `setup` writes its inputs into `dir` and returns the kvbench arguments.
struct HostileCase {
  const char* name;
  std::function<std::string(const TempDir& dir)> setup;
  int code;
  const char* fragment;  ///< expected in stderr (in stdout for exit 1, compare's verdict)
  enum Needs { kAnywhere, kNonRoot, kNoGpu } needs = kAnywhere;
};

/// The config of a valid run on `dump` with `extra` merged into it (null members remove a key).
std::string config_with(const std::string& dump, const json& extra = json::object()) {
  json c{{"datasets", {{{"path", dump}}}}, {"codecs", {{{"codec", "int"}, {"bits", {4}}}}}, {"repeats", 1},
         {"min_time_s", 0.0}, {"metrics", {{"topk", 4}}}};
  c.merge_patch(extra);
  return c.dump();
}

/// Write a valid dump (2 query heads, 1 KV head, d 16, C 20, Q 2), apply `edit`, write the run config;
/// returns the `run` arguments.
std::string run_on_dump(const TempDir& dir, const std::function<void(H5Edit&)>& edit, float scale = 1.f,
                        bool bad_ref = false) {
  write_dump(dir / "d.h5", 2, 1, 16, 20, 2, 11, scale, bad_ref);
  if (edit) {
    H5Edit e(dir / "d.h5");
    edit(e);
  }
  kvbtest::spit(dir.path / "cfg.json", config_with(dir / "d.h5"));
  return "run '" + (dir / "cfg.json") + "' -q -o '" + (dir / "out") + "'";
}

std::string run_config_text(const TempDir& dir, const std::string& text) {
  kvbtest::spit(dir.path / "cfg.json", text);
  return "run '" + (dir / "cfg.json") + "' -q -o '" + (dir / "out") + "'";
}

/// `run` on a valid dump with the config patched by `extra`.
std::string run_patched(const TempDir& dir, const json& extra) {
  write_dump(dir / "d.h5", 2, 1, 16, 20, 2, 11);
  return run_config_text(dir, config_with(dir / "d.h5", extra));
}

/// `compare` of a valid results.json against `text` as the new results.
std::string compare_against(const TempDir& dir, const std::string& text) {
  kvbtest::spit(dir.path / "base.json", tiny_results_json());
  kvbtest::spit(dir.path / "new.json", text);
  return "compare '" + (dir / "base.json") + "' '" + (dir / "new.json") + "'";
}

std::string results_with(const std::function<void(json&)>& edit) {
  json j = json::parse(tiny_results_json());
  edit(j);
  return j.dump();
}

const std::vector<HostileCase>& hostile_cases() {
  static const std::vector<HostileCase> cases = {
      // ---- configs --------------------------------------------------------------------------------------
      {"config_missing", [](const TempDir& d) { return "run '" + (d / "nope.json") + "'"; }, 2, "No such file"},
      {"config_is_directory",
       [](const TempDir& d) {
         fs::create_directories(d.path / "cfgdir");
         return "run '" + (d / "cfgdir") + "'";
       },
       2, "Is a directory"},
      {"config_symlink_loop",
       [](const TempDir& d) {
         fs::create_symlink(d.path / "b.json", d.path / "a.json");
         fs::create_symlink(d.path / "a.json", d.path / "b.json");
         return "run '" + (d / "a.json") + "'";
       },
       2, "symbolic links"},
      {"config_permission_denied",
       [](const TempDir& d) {
         kvbtest::spit(d.path / "c.json", "{}");
         fs::permissions(d.path / "c.json", fs::perms::none);
         return "run '" + (d / "c.json") + "'";
       },
       2, "Permission denied", HostileCase::kNonRoot},
      {"config_empty_file", [](const TempDir& d) { return run_config_text(d, ""); }, 2, "not valid JSON"},
      {"config_truncated", [](const TempDir& d) { return run_config_text(d, "{\"datasets\": [{\"path\": "); }, 2,
       "not valid JSON"},
      {"config_trailing_garbage", [](const TempDir& d) { return run_config_text(d, "{} }"); }, 2, "not valid JSON"},
      {"config_nan_literal", [](const TempDir& d) { return run_config_text(d, "{\"seed\": NaN}"); }, 2,
       "not valid JSON"},
      {"config_nested_60000_deep",
       [](const TempDir& d) { return run_config_text(d, "{\"seed\": " + nested(60000) + "}"); }, 2,
       "nested deeper than 64"},
      {"config_number_overflows_double",
       [](const TempDir& d) { return run_config_text(d, "{\"seed\": 1e400}"); }, 2, "seed: number \"1e400\" overflows"},
      {"config_negative_overflow_nested",
       [](const TempDir& d) {
         return run_config_text(d, "{\"codecs\": [{\"codec\": \"int\", \"params\": {\"group_size\": -1e999}}]}");
       },
       2, "codecs[0].params.group_size: number"},
      {"config_huge_string_value",
       [](const TempDir& d) { return run_patched(d, {{"codecs", {{{"codec", std::string(8 << 20, 'x')}}}}}); }, 2,
       "(8388608 bytes)"},
      {"config_huge_key",
       [](const TempDir& d) { return run_patched(d, {{std::string(1 << 20, 'k'), 1}}); }, 2, "unknown key"},
      {"config_invalid_utf8_codec",
       [](const TempDir& d) {
         write_dump(d / "d.h5", 2, 1, 16, 20, 2, 11);
         return run_config_text(d, "{\"datasets\": [{\"path\": \"d.h5\"}], \"codecs\": [{\"codec\": \"\xff\xfe\"}]}");
       },
       2, "not valid JSON"},
      {"config_unknown_top_key", [](const TempDir& d) { return run_patched(d, {{"bogus", 1}}); }, 2,
       "unknown key \"bogus\""},
      {"config_unknown_codec", [](const TempDir& d) { return run_patched(d, {{"codecs", {{{"codec", "nope"}}}}}); },
       2, "unknown codec \"nope\""},
      {"config_unknown_preset",
       [](const TempDir& d) { return run_patched(d, {{"codecs", {{{"codec", "kivi"}, {"preset", "zz"}}}}}); }, 2,
       "has no preset \"zz\""},
      {"config_bits_out_of_range",
       [](const TempDir& d) { return run_patched(d, {{"codecs", {{{"codec", "int"}, {"bits", {0}}}}}}); }, 2,
       "codecs[0].bits"},
      {"config_bits_wrong_type",
       [](const TempDir& d) { return run_patched(d, {{"codecs", {{{"codec", "int"}, {"bits", "4"}}}}}); }, 2,
       "codecs[0].bits"},
      {"config_unknown_param",
       [](const TempDir& d) {
         return run_patched(d, {{"codecs", {{{"codec", "int"}, {"params", {{"bogus_param", 1}}}}}}});
       },
       2, "unknown parameter \"bogus_param\""},
      {"config_fractional_int_param",
       [](const TempDir& d) {
         return run_patched(d, {{"codecs", {{{"codec", "int"}, {"params", {{"group_size", 32.5}}}}}}});
       },
       2, "codecs[0].params.group_size: expected an integer"},
      {"config_bool_for_number", [](const TempDir& d) { return run_patched(d, {{"repeats", true}}); }, 2,
       "repeats: expected an integer"},
      {"config_topk_above_context", [](const TempDir& d) { return run_patched(d, {{"metrics", {{"topk", 21}}}}); },
       2, "metrics.topk"},
      {"config_threads_negative", [](const TempDir& d) { return run_patched(d, {{"threads", -1}}); }, 2, "threads"},
      {"config_repeats_zero", [](const TempDir& d) { return run_patched(d, {{"repeats", 0}}); }, 2, "repeats"},
      {"config_seed_too_large", [](const TempDir& d) { return run_patched(d, {{"seed", 1e17}}); }, 2, "seed"},
      {"config_min_time_huge", [](const TempDir& d) { return run_patched(d, {{"min_time_s", 1e308}}); }, 2,
       "min_time_s"},
      {"config_no_datasets", [](const TempDir& d) { return run_patched(d, {{"datasets", json::array()}}); }, 2,
       "datasets"},
      {"config_no_codecs", [](const TempDir& d) { return run_patched(d, {{"codecs", json::array()}}); }, 2, "codecs"},
      {"config_dataset_path_empty",
       [](const TempDir& d) { return run_config_text(d, "{\"datasets\": [{\"path\": \"\"}], \"codecs\": [{\"codec\": \"int\"}]}"); },
       2, "datasets[0].path"},
      // ---- dumps ----------------------------------------------------------------------------------------
      {"dump_missing",
       [](const TempDir& d) { return run_config_text(d, config_with(d / "absent.h5")); }, 3, "absent.h5"},
      {"dump_is_directory",
       [](const TempDir& d) {
         fs::create_directories(d.path / "dir.h5");
         return run_config_text(d, config_with(d / "dir.h5"));
       },
       3, "dir.h5"},
      {"dump_empty_file",
       [](const TempDir& d) {
         kvbtest::spit(d.path / "e.h5", "");
         return run_config_text(d, config_with(d / "e.h5"));
       },
       3, "e.h5"},
      {"dump_garbage",
       [](const TempDir& d) {
         std::string g(4096, '\0');
         kvb::Rng rng(5);
         for (auto& ch : g) ch = static_cast<char>(rng.next_u64() & 0xff);
         kvbtest::spit(d.path / "g.h5", g);
         return run_config_text(d, config_with(d / "g.h5"));
       },
       3, "g.h5"},
      {"dump_truncated",
       [](const TempDir& d) {
         write_dump(d / "full.h5", 2, 1, 16, 20, 2, 11);
         const std::string all = kvbtest::slurp(d.path / "full.h5");
         kvbtest::spit(d.path / "t.h5", all.substr(0, all.size() / 2));
         return run_config_text(d, config_with(d / "t.h5"));
       },
       3, "t.h5"},
      {"dump_missing_head_dim",
       [](const TempDir& d) { return run_on_dump(d, [](H5Edit& e) { e.del_attr("/", "head_dim"); }); }, 3,
       "head_dim"},
      {"dump_wrong_format_attr",
       [](const TempDir& d) { return run_on_dump(d, [](H5Edit& e) { e.set_string("/", "format", "npz"); }); }, 3,
       "format"},
      {"dump_format_version_2",
       [](const TempDir& d) { return run_on_dump(d, [](H5Edit& e) { e.set_int("/", "format_version", 2); }); }, 3,
       "format_version"},
      {"dump_heads_not_multiple",
       [](const TempDir& d) { return run_on_dump(d, [](H5Edit& e) { e.set_int("/", "n_kv_heads", 3); }); }, 3,
       "n_kv_heads"},
      {"dump_head_dim_zero",
       [](const TempDir& d) { return run_on_dump(d, [](H5Edit& e) { e.set_int("/", "head_dim", 0); }); }, 3,
       "head_dim"},
      {"dump_missing_keys",
       [](const TempDir& d) { return run_on_dump(d, [](H5Edit& e) { e.del("/sequences/s0/layers/0/keys"); }); }, 3,
       "/sequences/s0/layers/0/keys"},
      {"dump_missing_queries",
       [](const TempDir& d) { return run_on_dump(d, [](H5Edit& e) { e.del("/sequences/s0/layers/0/queries"); }); },
       3, "/sequences/s0/layers/0/queries"},
      {"dump_values_wrong_shape",
       [](const TempDir& d) {
         return run_on_dump(d, [](H5Edit& e) { e.replace_f32("/sequences/s0/layers/0/values", {1, 21, 16}); });
       },
       3, "/sequences/s0/layers/0/values"},
      {"dump_nan_in_keys",
       [](const TempDir& d) { return run_on_dump(d, [](H5Edit& e) { e.poke<float>("/sequences/s0/layers/0/keys", 7, NAN); }); },
       3, "/sequences/s0/layers/0/keys"},
      {"dump_inf_in_queries",
       [](const TempDir& d) {
         return run_on_dump(d, [](H5Edit& e) { e.poke<float>("/sequences/s0/layers/0/queries", 3, INFINITY); });
       },
       3, "/sequences/s0/layers/0/queries"},
      {"dump_query_before_context",
       [](const TempDir& d) { return run_on_dump(d, [](H5Edit& e) { e.poke<int64_t>("/sequences/s0/query_positions", 0, 5); }); },
       3, "query_positions"},
      {"dump_context_len_zero",
       [](const TempDir& d) { return run_on_dump(d, [](H5Edit& e) { e.set_int("/sequences/s0", "context_len", 0); }); },
       3, "context_len"},
      {"dump_softmax_scale_zero",
       [](const TempDir& d) { return run_on_dump(d, [](H5Edit& e) { e.set_double("/", "softmax_scale", 0.0); }); }, 3,
       "softmax_scale"},
      {"dump_softmax_scale_beyond_float",
       [](const TempDir& d) { return run_on_dump(d, [](H5Edit& e) { e.set_double("/", "softmax_scale", 1e300); }); },
       3, "softmax_scale"},
      {"dump_logits_overflow_float32",
       [](const TempDir& d) { return run_on_dump(d, [](H5Edit& e) { e.set_double("/", "softmax_scale", 1e38); }); },
       3, "exceed float32's range"},
      {"dump_ref_out_disagrees", [](const TempDir& d) { return run_on_dump(d, nullptr, 1.f, true); }, 3, "ref_out"},
      {"dump_rope_style_60KB",
       [](const TempDir& d) {
         return run_on_dump(d, [](H5Edit& e) { e.set_string("/", "rope_style", std::string(60000, 'r')); });
       },
       3, "rope_style"},
      {"dump_sequence_not_found",
       [](const TempDir& d) { return run_patched(d, {{"datasets", {{{"path", d / "d.h5"}, {"sequences", {"zz"}}}}}}); },
       2, "has no sequence \"zz\""},
      {"inspect_garbage",
       [](const TempDir& d) {
         kvbtest::spit(d.path / "g.h5", std::string(1000, 'g'));
         return "inspect '" + (d / "g.h5") + "'";
       },
       3, "g.h5"},
      // ---- command lines --------------------------------------------------------------------------------
      {"cli_unknown_command", [](const TempDir&) { return std::string("frobnicate"); }, 2, "unknown command \"frobnicate\""},
      {"cli_no_command", [](const TempDir&) { return std::string(""); }, 2, "subcommand"},
      {"cli_unknown_flag", [](const TempDir&) { return std::string("list --bogus"); }, 2, "--bogus"},
      {"cli_huge_unknown_flag", [](const TempDir&) { return "list --" + std::string(100000, 'z'); }, 2, "bytes)"},
      {"cli_run_without_config", [](const TempDir&) { return std::string("run"); }, 2, "config"},
      {"cli_compare_fidelity_tol_nan",
       [](const TempDir& d) { return compare_against(d, tiny_results_json()) + " --fidelity-tol nan"; }, 2,
       "finite"},
      {"cli_compare_storage_tol_nan",
       [](const TempDir& d) { return compare_against(d, tiny_results_json()) + " --storage-tol nan"; }, 2, "finite"},
      {"cli_compare_throughput_tol_inf",
       [](const TempDir& d) { return compare_against(d, tiny_results_json()) + " --throughput-tol inf"; }, 2,
       "finite"},
      {"cli_compare_fidelity_tol_negative",
       [](const TempDir& d) { return compare_against(d, tiny_results_json()) + " --fidelity-tol -1"; }, 2,
       "fidelity-tol"},
      {"cli_selftest_unknown_codec", [](const TempDir&) { return std::string("selftest --device cpu --codec nope"); },
       2, "unknown codec \"nope\""},
      {"cli_gen_negative_tokens",
       [](const TempDir& d) { return "gen --model-like tiny --tokens -5 -o '" + (d / "g.h5") + "'"; }, 2, "tokens"},
      {"cli_gen_rope_theta_nan",
       [](const TempDir& d) { return "gen --model-like tiny --rope-theta nan -o '" + (d / "g.h5") + "'"; }, 2,
       "rope-theta"},
      {"cli_gen_unknown_preset",
       [](const TempDir& d) { return "gen --model-like nope -o '" + (d / "g.h5") + "'"; }, 2, "model-like"},
      {"cli_membw_min_time_nan", [](const TempDir&) { return std::string("membw --min-time nan"); }, 2, "finite"},
      {"cli_run_shard_beyond",
       [](const TempDir& d) { return run_patched(d, json::object()) + " --shard 3/2"; }, 2, "shard"},
      {"cli_run_shard_zero", [](const TempDir& d) { return run_patched(d, json::object()) + " --shard 0/0"; }, 2,
       "shard"},
      {"cli_run_bad_device", [](const TempDir& d) { return run_patched(d, json::object()) + " --device tpu"; }, 2,
       "device"},
      {"cli_report_bad_format",
       [](const TempDir& d) {
         fs::create_directories(d.path / "r");
         kvbtest::spit(d.path / "r" / "results.json", tiny_results_json());
         return "report '" + (d / "r") + "' --format pdf";
       },
       2, "format"},
      // ---- exit 1 and 4 -----------------------------------------------------------------------------------
      {"compare_cosine_drop_is_a_regression",
       [](const TempDir& d) {
         return compare_against(d, results_with([](json& j) {
           auto& m = j["cells"][0]["fidelity"]["cosine"]["mean"];
           m = m.get<double>() - 0.1;
         }));
       },
       1, "REGRESSION: "},
      {"compare_cosine_drop_with_nan_tolerance_is_refused",
       [](const TempDir& d) {
         return compare_against(d, results_with([](json& j) {
                  auto& m = j["cells"][0]["fidelity"]["cosine"]["mean"];
                  m = m.get<double>() - 0.1;
                })) +
                " --fidelity-tol nan";
       },
       2, "--fidelity-tol: expected a finite number, found nan"},
      {"run_device_cuda_without_gpu", [](const TempDir& d) { return run_patched(d, json::object()) + " --device cuda"; },
       4, "CUDA", HostileCase::kNoGpu},
      {"selftest_device_cuda_without_gpu", [](const TempDir&) { return std::string("selftest --device cuda"); }, 4,
       "no usable CUDA device", HostileCase::kNoGpu},
      // ---- results files --------------------------------------------------------------------------------
      {"results_compare_missing",
       [](const TempDir& d) {
         kvbtest::spit(d.path / "base.json", tiny_results_json());
         return "compare '" + (d / "base.json") + "' '" + (d / "absent.json") + "'";
       },
       3, "absent.json"},
      {"results_compare_garbage", [](const TempDir& d) { return compare_against(d, "{\"cells\": [1, 2"); }, 3,
       "not valid JSON"},
      {"results_compare_nested_deep",
       [](const TempDir& d) { return compare_against(d, "{\"x\": " + nested(100000) + "}"); }, 3, "nested deeper"},
      {"results_compare_number_overflow",
       [](const TempDir& d) {
         std::string t = tiny_results_json();
         const auto p = t.find("\"schema_version\": 1");
         t.replace(p, 19, "\"schema_version\": 1e999");
         return compare_against(d, t);
       },
       3, "schema_version: number"},
      {"results_compare_wrong_schema",
       [](const TempDir& d) { return compare_against(d, results_with([](json& j) { j["schema_version"] = 99; })); },
       3, "schema_version"},
      {"results_compare_cells_not_array",
       [](const TempDir& d) { return compare_against(d, results_with([](json& j) { j["cells"] = 3; })); }, 3,
       "\"cells\""},
      {"results_compare_directory_named_results_json",
       [](const TempDir& d) {
         kvbtest::spit(d.path / "base.json", tiny_results_json());
         fs::create_directories(d.path / "x" / "results.json");
         return "compare '" + (d / "base.json") + "' '" + (d / "x") + "'";
       },
       3, "is a directory"},
      {"results_merge_not_a_results_dir",
       [](const TempDir& d) {
         fs::create_directories(d.path / "a");
         fs::create_directories(d.path / "b");
         return "merge '" + (d / "a") + "' '" + (d / "b") + "' -o '" + (d / "out") + "'";
       },
       3, "results.json"},
      {"results_merge_truncated",
       [](const TempDir& d) {
         fs::create_directories(d.path / "a");
         const std::string t = tiny_results_json();
         kvbtest::spit(d.path / "a" / "results.json", t.substr(0, t.size() / 2));
         return "merge '" + (d / "a") + "' '" + (d / "a") + "' -o '" + (d / "out") + "'";
       },
       3, "not valid JSON"},
      {"results_report_malformed",
       [](const TempDir& d) {
         fs::create_directories(d.path / "r");
         kvbtest::spit(d.path / "r" / "results.json", "[]");
         return "report '" + (d / "r") + "' --out '" + (d / "out") + "'";
       },
       3, "results.json"},
  };
  return cases;
}

/// Names of files under `dir` that a failed command must not leave: results files and temporaries.
std::vector<std::string> leftovers(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    const std::string name = it->path().filename().string();
    const bool under_out = it->path().string().find("/out/") != std::string::npos;
    if (name.find(".tmp") != std::string::npos || (under_out && (name == "results.json" || name == "results.csv" ||
                                                                 name == "report.html")))
      out.push_back(it->path().string());
  }
  return out;
}

TEST(HostileTable, EveryCaseExitsWithItsCodeAndSaysWhy) {
  const auto& cases = hostile_cases();
  ASSERT_GE(cases.size(), 60u) << "the issue asks for at least 60 named cases";
  const bool root = ::geteuid() == 0;
  std::error_code ec;
  const bool gpu = fs::exists("/dev/nvidia0", ec);  // a machine with an NVIDIA device node
  int ran = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    if (c.needs == HostileCase::kNonRoot && root) {
      std::printf("[ skipped  ] %s (running as root: permissions do not apply)\n", c.name);
      continue;
    }
    if (c.needs == HostileCase::kNoGpu && gpu) {
      std::printf("[ skipped  ] %s (this machine has a GPU)\n", c.name);
      continue;
    }
    TempDir tmp(std::string("ht-") + c.name);
    const std::string args = c.setup(tmp);
    const auto r = kvbtest::kvbench(args, tmp);
    ++ran;
    const std::string shown = kvbtest::describe(r).substr(0, 3000);
    EXPECT_EQ(r.code, c.code) << c.name << ": kvbench " << args.substr(0, 200) << "\n" << shown;
    // Errors speak on stderr; a regression (exit 1) is compare's verdict, printed on stdout.
    const std::string& said = c.code == 1 ? r.out : r.err;
    EXPECT_NE(said.find(c.fragment), std::string::npos)
        << c.name << ": expected \"" << c.fragment << "\" in " << (c.code == 1 ? "stdout" : "stderr") << "\n" << shown;
    EXPECT_LT(r.err.size(), 4096u) << c.name << ": unbounded message (" << r.err.size() << " bytes)";
    EXPECT_EQ(r.out.find("results:"), std::string::npos) << c.name << ": a failed run announced results";
    const auto left = leftovers(tmp.path);
    EXPECT_TRUE(left.empty()) << c.name << ": left " << left.front();
  }
  std::printf("hostile table: %d of %zu cases ran\n", ran, cases.size());
}

}  // namespace
