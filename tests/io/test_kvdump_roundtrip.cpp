// kvdump writer -> reader round trips: every dtype, contiguous / chunked / deflated, hyperslab reads.
#include <fstream>
#include <functional>

#include "io_test_util.h"

using namespace kvbtest;

namespace {

struct Layout {
  const char* name;
  int64_t chunk_tokens;
  int deflate;
};

const Layout kLayouts[] = {{"contiguous", 0, 0}, {"chunked7", 7, 0}, {"chunked16-deflate4", 16, 4}};
const kvb::DType kDtypes[] = {kvb::DType::kFloat16, kvb::DType::kBFloat16, kvb::DType::kFloat32};

void expect_rounded_equal(const float* got, const float* orig, size_t n, kvb::DType dt, const std::string& what) {
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    if (got[i] != round_dtype(dt, orig[i])) {
      if (bad++ < 3)
        ADD_FAILURE() << what << " [" << i << "]: got " << got[i] << ", wrote " << orig[i] << " -> "
                      << round_dtype(dt, orig[i]);
    }
  }
  EXPECT_EQ(bad, 0u) << what;
}

}  // namespace

TEST(KvDumpRoundTrip, EveryDtypeAndLayout) {
  for (kvb::DType dt : kDtypes) {
    for (const Layout& lay : kLayouts) {
      SmallDumpSpec spec;
      spec.seed = 11;
      const std::string cfg = fmt::format("dtype={} layout={} {}", kvb::to_string(dt), lay.name, spec.describe());
      SCOPED_TRACE(cfg);
      const std::string path = scratch(fmt::format("rt_{}_{}.h5", kvb::to_string(dt), lay.name));
      kvb::WriterOptions wo;
      wo.dtype = dt;
      wo.chunk_tokens = lay.chunk_tokens;
      wo.deflate = lay.deflate;
      const auto seqs = write_small_dump(path, spec, wo);

      const kvb::KvDumpReader r(path);
      EXPECT_EQ(r.dtype(), dt);
      const kvb::DumpAttrs& a = r.attrs();
      EXPECT_EQ(a.model, "test:small");
      EXPECT_EQ(a.source, "test_io");
      EXPECT_EQ(a.shape.n_layers, spec.layers);
      EXPECT_EQ(a.shape.n_heads, spec.heads);
      EXPECT_EQ(a.shape.n_kv_heads, spec.kv_heads);
      EXPECT_EQ(a.shape.head_dim, spec.head_dim);
      EXPECT_EQ(a.rope_style, "half");
      EXPECT_DOUBLE_EQ(a.softmax_scale, 0.25);
      ASSERT_TRUE(a.seed.has_value());
      EXPECT_EQ(*a.seed, 11);
      ASSERT_EQ(r.sequences().size(), seqs.size());
      for (size_t s = 0; s < seqs.size(); ++s) {
        const kvb::SequenceInfo& si = r.sequences()[s];
        EXPECT_EQ(si.id, seqs[s].id);
        EXPECT_EQ(si.n_tokens, spec.tokens);
        EXPECT_EQ(si.context_len, spec.context);
        EXPECT_EQ(si.n_queries, spec.tokens - spec.context);
        EXPECT_EQ(si.query_positions, seqs[s].query_positions);
        EXPECT_TRUE(si.has_ref_out);
        EXPECT_TRUE(si.has_tokens);
        EXPECT_EQ(r.read_tokens(s), seqs[s].tokens);
        for (int l = 0; l < spec.layers; ++l) {
          SCOPED_TRACE(fmt::format("sequence {} layer {}", s, l));
          const auto& L = seqs[s].layers[static_cast<size_t>(l)];
          const kvb::LayerKV kv = r.read_kv(s, l, 0, spec.tokens);
          ASSERT_EQ(kv.k.size(), L.keys.size());
          expect_rounded_equal(kv.k.data(), L.keys.data(), L.keys.size(), dt, "keys");
          expect_rounded_equal(kv.v.data(), L.values.data(), L.values.size(), dt, "values");
          const kvb::LayerQueries lq = r.read_queries(s, l, 0);
          ASSERT_EQ(lq.n, spec.tokens - spec.context);
          expect_rounded_equal(lq.q.data(), L.queries.data(), L.queries.size(), dt, "queries");
          // ref_out is always float32.
          expect_rounded_equal(lq.ref_out.data(), L.ref_out.data(), L.ref_out.size(), kvb::DType::kFloat32, "ref_out");
        }
      }
    }
  }
}

TEST(KvDumpRoundTrip, HyperslabSubRanges) {
  SmallDumpSpec spec;
  spec.tokens = 50;
  spec.context = 40;
  spec.seed = 3;
  SCOPED_TRACE(spec.describe());
  const std::string path = scratch("hyperslab.h5");
  kvb::WriterOptions wo;
  wo.chunk_tokens = 8;  // ranges straddle chunk boundaries
  wo.deflate = 1;
  const auto seqs = write_small_dump(path, spec, wo);
  const kvb::KvDumpReader r(path);
  const int D = spec.head_dim;
  const std::pair<int64_t, int64_t> ranges[] = {{0, 1}, {0, 40}, {7, 9}, {13, 31}, {39, 50}, {49, 50}, {5, 5}};
  for (const auto& [t0, t1] : ranges) {
    for (int g = 0; g < spec.kv_heads; ++g) {
      SCOPED_TRACE(fmt::format("tokens [{}, {}) kv head {}", t0, t1, g));
      std::vector<float> k(static_cast<size_t>(t1 - t0) * D + 1, -7.f), v(k.size(), -7.f);
      r.read_kv_head(1, 1, g, t0, t1, k.data(), v.data());
      const auto& L = seqs[1].layers[1];
      for (int64_t t = t0; t < t1; ++t)
        for (int j = 0; j < D; ++j) {
          const size_t src = (static_cast<size_t>(g) * spec.tokens + t) * D + j;
          const size_t dst = static_cast<size_t>(t - t0) * D + j;
          ASSERT_EQ(k[dst], round_dtype(kvb::DType::kFloat16, L.keys[src])) << "t=" << t << " j=" << j;
          ASSERT_EQ(v[dst], round_dtype(kvb::DType::kFloat16, L.values[src])) << "t=" << t << " j=" << j;
        }
      EXPECT_EQ(k.back(), -7.f) << "read past the requested range";
    }
    const kvb::LayerKV kv = r.read_kv(0, 0, t0, t1);
    EXPECT_EQ(kv.tokens, t1 - t0);
    EXPECT_EQ(kv.k.size(), static_cast<size_t>(spec.kv_heads) * (t1 - t0) * D);
  }
  // Only the first max_queries queries (and their ref_out).
  const kvb::LayerQueries lq = r.read_queries(0, 1, 3);
  ASSERT_EQ(lq.n, 3);
  const auto& L = seqs[0].layers[1];
  const int64_t Q = spec.tokens - spec.context;
  for (int h = 0; h < spec.heads; ++h)
    for (int64_t i = 0; i < 3; ++i)
      for (int j = 0; j < D; ++j) {
        const size_t src = (static_cast<size_t>(h) * Q + i) * D + j;
        EXPECT_EQ(lq.query(h, i)[j], round_dtype(kvb::DType::kFloat16, L.queries[src]));
        EXPECT_EQ(lq.ref(h, i)[j], L.ref_out[src]);
      }
  EXPECT_EQ(r.read_queries(0, 1, 1000).n, Q);
  EXPECT_EQ(r.read_queries(0, 1, -1).n, Q);
  // Out-of-range requests are usage errors, not crashes.
  std::vector<float> buf(1000);
  EXPECT_THROW(r.read_kv_head(0, 0, 0, 10, 51, buf.data(), buf.data()), kvb::UsageError);
  EXPECT_THROW(r.read_kv_head(0, 0, 2, 0, 1, buf.data(), buf.data()), kvb::UsageError);
  EXPECT_THROW(r.read_kv(2, 0, 0, 1), kvb::UsageError);
  EXPECT_THROW(r.read_kv(0, 2, 0, 1), kvb::UsageError);
  EXPECT_THROW(r.read_kv(0, 0, 5, 4), kvb::UsageError);
}

TEST(KvDumpRoundTrip, OptionalPartsAndEdgeShapes) {
  // head_dim 1 and 1024 are valid; no ref_out, no tokens; MHA; a single sequence.
  for (int D : {1, 1024}) {
    SmallDumpSpec spec;
    spec.head_dim = D;
    spec.heads = 2;
    spec.kv_heads = 2;
    spec.layers = 1;
    spec.sequences = 1;
    spec.tokens = 5;
    spec.context = 1;
    spec.ref_out = false;
    spec.tokens_ds = false;
    SCOPED_TRACE(spec.describe());
    const std::string path = scratch(fmt::format("edge_{}.h5", D));
    const auto seqs = write_small_dump(path, spec);
    const kvb::KvDumpReader r(path);
    EXPECT_EQ(r.attrs().shape.head_dim, D);
    EXPECT_FALSE(r.sequences()[0].has_ref_out);
    EXPECT_FALSE(r.sequences()[0].has_tokens);
    EXPECT_TRUE(r.read_tokens(0).empty());
    EXPECT_TRUE(r.read_queries(0, 0, 0).ref_out.empty());
    EXPECT_EQ(r.read_kv(0, 0, 0, 1).k.size(), static_cast<size_t>(2 * D));
  }
}

TEST(KvDumpRoundTrip, SequencesInNaturalOrderAndSlidingWindow) {
  SmallDumpSpec spec;
  spec.sequences = 0;
  const std::string path = scratch("order.h5");
  kvb::KvDumpWriter w(path, small_attrs(spec));
  SmallDumpSpec one = spec;
  one.sequences = 1;
  for (const char* id : {"s10", "s2", "s1"}) {
    auto sd = small_sequences(one)[0];
    sd.id = id;
    sd.layers[1].sliding_window = 4096;
    w.write_sequence(sd);
  }
  w.close();
  const kvb::KvDumpReader r(path);
  ASSERT_EQ(r.sequences().size(), 3u);
  EXPECT_EQ(r.sequences()[0].id, "s1");
  EXPECT_EQ(r.sequences()[1].id, "s2");
  EXPECT_EQ(r.sequences()[2].id, "s10");
  EXPECT_EQ(r.sequences()[0].sliding_window, (std::vector<int64_t>{0, 4096}));
}

TEST(KvDumpWriter, AtomicAndValidating) {
  SmallDumpSpec spec;
  const std::string path = scratch("atomic.h5");
  {
    kvb::KvDumpWriter w(path, small_attrs(spec));
    w.write_sequence(small_sequences(spec)[0]);
    EXPECT_FALSE(std::filesystem::exists(path)) << "the final name appears only on close()";
    // destroyed without close(): the temporary file is removed, nothing is left under the final name
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  for (const auto& e : std::filesystem::directory_iterator(scratch_dir()))
    EXPECT_EQ(e.path().filename().string().find("atomic.h5.tmp"), std::string::npos) << e.path();

  const auto seqs = small_sequences(spec);
  auto expect_rejected = [&](const char* what, const std::function<void(kvb::SequenceData&)>& spoil) {
    SCOPED_TRACE(what);
    kvb::KvDumpWriter w(path, small_attrs(spec));
    auto bad = seqs[0];
    spoil(bad);
    EXPECT_THROW(w.write_sequence(bad), kvb::Error);
  };
  expect_rejected("keys one float short", [](kvb::SequenceData& s) { s.layers[1].keys.pop_back(); });
  expect_rejected("ref_out of the wrong size", [](kvb::SequenceData& s) { s.layers[0].ref_out.resize(3); });
  expect_rejected("query before the context end", [&](kvb::SequenceData& s) { s.query_positions[0] = spec.context - 1; });
  expect_rejected("context_len 0", [](kvb::SequenceData& s) { s.context_len = 0; });
  expect_rejected("context_len > n_tokens", [](kvb::SequenceData& s) { s.context_len = s.n_tokens + 1; });
  expect_rejected("no queries", [](kvb::SequenceData& s) { s.query_positions.clear(); });
  expect_rejected("too few layers", [](kvb::SequenceData& s) { s.layers.pop_back(); });
  expect_rejected("tokens of the wrong length", [](kvb::SequenceData& s) { s.tokens.pop_back(); });
  expect_rejected("value overflowing float16", [](kvb::SequenceData& s) { s.layers[1].values[5] = 1e6f; });
  expect_rejected("NaN value", [](kvb::SequenceData& s) { s.layers[0].queries[2] = NAN; });
  expect_rejected("id with a slash", [](kvb::SequenceData& s) { s.id = "a/b"; });
  {
    kvb::KvDumpWriter w(path, small_attrs(spec));
    w.write_sequence(seqs[0]);
    EXPECT_THROW(w.write_sequence(seqs[0]), kvb::UsageError);  // the same id twice
    kvb::SequenceData header = seqs[1];
    w.begin_sequence(header);
    w.write_layer(0, seqs[1].layers[0]);
    EXPECT_THROW(w.write_layer(0, seqs[1].layers[0]), kvb::UsageError);  // out of order
    EXPECT_THROW(w.end_sequence(), kvb::UsageError);                     // a layer is missing
    EXPECT_THROW(w.close(), kvb::UsageError);                            // still open
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  {
    kvb::KvDumpWriter w(path, small_attrs(spec));
    EXPECT_THROW(w.close(), kvb::UsageError);  // a dump needs a sequence
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(KvDumpWriter, RejectsBadAttributes) {
  SmallDumpSpec spec;
  auto a = small_attrs(spec);
  a.shape.n_heads = 3;
  EXPECT_THROW(kvb::KvDumpWriter(scratch("bad_attr.h5"), a), kvb::UsageError);
  a = small_attrs(spec);
  a.rope_style = "sideways";
  EXPECT_THROW(kvb::KvDumpWriter(scratch("bad_attr.h5"), a), kvb::UsageError);
  a = small_attrs(spec);
  a.shape.head_dim = 1025;
  EXPECT_THROW(kvb::KvDumpWriter(scratch("bad_attr.h5"), a), kvb::UsageError);
  EXPECT_THROW(kvb::KvDumpWriter("/nonexistent-dir/x.h5", small_attrs(spec)), kvb::UsageError);
}

TEST(KvDumpReader, ChecksumIsStableAndContentSensitive) {
  SmallDumpSpec spec;
  const std::string p1 = scratch("cs1.h5"), p2 = scratch("cs2.h5"), p3 = scratch("cs3.h5");
  write_small_dump(p1, spec);
  write_small_dump(p2, spec);
  spec.seed += 1;
  write_small_dump(p3, spec);
  const std::string c1 = kvb::KvDumpReader(p1).checksum();
  EXPECT_EQ(c1.size(), 16u);
  EXPECT_EQ(c1, kvb::KvDumpReader(p1).checksum());
  EXPECT_EQ(c1, kvb::KvDumpReader(p2).checksum()) << "same content must give the same bytes (no timestamps)";
  EXPECT_NE(c1, kvb::KvDumpReader(p3).checksum());
}
