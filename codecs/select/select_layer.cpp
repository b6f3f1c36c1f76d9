#include "codecs/select/select_layer.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <numeric>

#include "codecs/common/baseline.h"

namespace kvb::codecs {

void halve(const std::vector<int8_t>& sigma, std::vector<int32_t>& idx, std::vector<int32_t>& w) {
  const int64_t n = static_cast<int64_t>(idx.size()), half = n / 2;
  if (half == 0) {
    idx.clear(), w.clear();
    return;
  }
  // Cut point: the first index where one class reaches ⌊n/2⌋ members; c = the later of the two.
  int64_t c_neg = 0, c_pos = 0, cnt_neg = 0, cnt_pos = 0;
  bool got_neg = false, got_pos = false;
  for (int64_t i = 0; i < n && !(got_neg && got_pos); ++i) {
    if (sigma[i] < 0) {
      if (++cnt_neg == half && !got_neg) c_neg = i, got_neg = true;
    } else {
      if (++cnt_pos == half && !got_pos) c_pos = i, got_pos = true;
    }
  }
  const int64_t c = std::max(c_neg, c_pos);
  const int8_t dropped = sigma[c];  // the class completed at c is dropped from the prefix
  // Stable order by weight: the other class of the prefix (ω = 2), then the tail after c (ω = 1); the
  // dropped class (ω = −2) is never reached because the first two hold n − ⌊n/2⌋ >= ⌊n/2⌋ tokens.
  std::vector<int32_t> ni, nw;
  ni.reserve(half), nw.reserve(half);
  for (int64_t i = 0; i <= c && static_cast<int64_t>(ni.size()) < half; ++i)
    if (sigma[i] != dropped) ni.push_back(idx[i]), nw.push_back(w[i] * 2);
  for (int64_t i = c + 1; i < n && static_cast<int64_t>(ni.size()) < half; ++i) ni.push_back(idx[i]), nw.push_back(w[i]);
  idx.swap(ni), w.swap(nw);
}

KeptSet group_by_class(const std::vector<int32_t>& idx, const std::vector<int32_t>& w) {
  std::vector<size_t> order(idx.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return w[a] != w[b] ? w[a] > w[b] : idx[a] < idx[b]; });
  KeptSet ks;
  for (size_t o : order) ks.index.push_back(idx[o]), ks.weight.push_back(w[o]);
  return ks;
}

SelectLayerBase::SelectLayerBase(const SelectParams& p, int kv_heads, int64_t tokens, int head_dim, AttnConfig attn)
    : p_(p), H_(kv_heads), d_(head_dim), C_(tokens), attn_(attn), split_(SelectSplit::of(p, tokens)),
      kept_(split_.kept(p.levels)), rows_(split_.sink + kept_ + split_.window) {
  counts_.assign(static_cast<size_t>(H_) * (p.levels + 1), 0);
  pos_.resize(static_cast<size_t>(H_) * rows_);
  for (int k = 0; k <= p.levels; ++k) {
    const int e = p.levels - k;  // class k holds weight 2^e
    bias_.push_back(static_cast<float>((p.consistent ? e : p.levels) * std::log(2.0)));
    vfac_.push_back(p.consistent ? 1.f : std::ldexp(1.f, e - p.levels));
  }
}

void SelectLayerBase::set_head(int g, const KeptSet& ks) {
  const int64_t s = split_.sink, m = split_.mid;
  int32_t* pos = &pos_[static_cast<size_t>(g) * rows_];
  std::fill_n(&counts_[static_cast<size_t>(g) * (p_.levels + 1)], p_.levels + 1, 0);  // re-encodes start over
  int64_t r = 0;
  for (int64_t t = 0; t < s; ++t) pos[r++] = static_cast<int32_t>(t);
  for (size_t i = 0; i < ks.index.size(); ++i) {
    pos[r++] = static_cast<int32_t>(s + ks.index[i]);
    const int e = std::countr_zero(static_cast<uint32_t>(ks.weight[i]));
    ++counts_[static_cast<size_t>(g) * (p_.levels + 1) + (p_.levels - e)];
  }
  for (int64_t t = s + m; t < C_; ++t) pos[r++] = static_cast<int32_t>(t);
}

Storage SelectLayerBase::storage() const {
  const int64_t verb = split_.sink + split_.window;
  const uint64_t row = 2ull * d_;
  return StorageList(H_, p_.bytes_per_token(d_))
      .add("k.kept", StorageKind::kCompressed, H_ * kept_ * row, split_.mid)
      .add("v.kept", StorageKind::kCompressed, H_ * kept_ * row, split_.mid)
      .add("w.class_counts", StorageKind::kFixed, bytes_of(counts_), 0)
      .add("k.sink_window", StorageKind::kBuffer, H_ * verb * row, verb)
      .add("v.sink_window", StorageKind::kBuffer, H_ * verb * row, verb)
      .get();
}

std::vector<uint8_t> SelectLayerBase::held_tokens(int g) const {
  std::vector<uint8_t> m(static_cast<size_t>(C_), 0);
  const int32_t* pos = &pos_[static_cast<size_t>(g) * rows_];
  for (int64_t r = 0; r < rows_; ++r) m[pos[r]] = 1;
  return m;
}

std::vector<NamedBuffer> SelectLayerBase::split_buffers(const std::vector<uint16_t>& k,
                                                        const std::vector<uint16_t>& v) const {
  std::vector<NamedBuffer> out;
  for (const auto* src : {&k, &v}) {
    const std::string kv = src == &k ? "k" : "v";
    NamedBuffer kept{kv + ".kept", {}}, verb{kv + ".sink_window", {}};
    for (int g = 0; g < H_; ++g)
      for (int64_t r = 0; r < rows_; ++r) {
        const auto* p = reinterpret_cast<const uint8_t*>(&(*src)[(static_cast<size_t>(g) * rows_ + r) * d_]);
        auto& dst = (r >= split_.sink && r < split_.sink + kept_) ? kept.bytes : verb.bytes;
        dst.insert(dst.end(), p, p + 2 * d_);
      }
    out.push_back(std::move(kept));
    out.push_back(std::move(verb));
  }
  out.push_back(named_buffer("w.class_counts", counts_));
  return out;
}

void SelectLayerBase::add_class_bias(int g, float* s) const {
  const int32_t* cnt = &counts_[static_cast<size_t>(g) * (p_.levels + 1)];
  int64_t r = split_.sink;
  for (int k = 0; k <= p_.levels; ++k)
    for (int32_t i = 0; i < cnt[k]; ++i) s[r++] += bias_[k];
}

void SelectLayerBase::scale_class_weights(int g, float* w) const {
  if (p_.consistent) return;  // every factor is 1
  const int32_t* cnt = &counts_[static_cast<size_t>(g) * (p_.levels + 1)];
  int64_t r = split_.sink;
  for (int k = 0; k <= p_.levels; ++k)
    for (int32_t i = 0; i < cnt[k]; ++i) w[r++] *= vfac_[k];
}

int SelectLayerBase::class_segments(int g, kernels::RowSegment* out, int cap) const {
  if (p_.levels + 3 > cap) return 0;
  const int32_t* cnt = &counts_[static_cast<size_t>(g) * (p_.levels + 1)];
  int n = 0;
  int64_t r = split_.sink;
  out[n++] = kernels::RowSegment{split_.sink, 0.f, 1.f};
  for (int k = 0; k <= p_.levels; ++k) {
    out[n++] = kernels::RowSegment{cnt[k], bias_[k], p_.consistent ? 1.f : vfac_[k]};
    r += cnt[k];
  }
  out[n++] = kernels::RowSegment{rows_ - r, 0.f, 1.f};
  return n;
}

void SelectLayerBase::attend_lse(int g, const float* q, float* o_out, double* lse_out, Scratch& scratch) const {
  // scores() and attend() may use every buffer of scratch (as EncodedLayer's default), so the logits live
  // in per-thread buffers of their own, grown once.
  thread_local std::vector<float> s_tok, s_row;
  if (s_tok.size() < static_cast<size_t>(C_)) s_tok.resize(static_cast<size_t>(C_));
  if (s_row.size() < static_cast<size_t>(rows_)) s_row.resize(static_cast<size_t>(rows_));
  scores(g, q, s_tok.data(), scratch);
  const int32_t* pos = &pos_[static_cast<size_t>(g) * rows_];
  for (int64_t r = 0; r < rows_; ++r) s_row[r] = s_tok[pos[r]];
  add_class_bias(g, s_row.data());
  *lse_out = logsumexp_logits(s_row.data(), rows_);
  attend(g, q, o_out, scratch);
}

void SelectLayerBase::scatter_scores(int g, const float* s, float* s_out) const {
  const int32_t* pos = &pos_[static_cast<size_t>(g) * rows_];
  std::fill(s_out, s_out + C_, 0.f);
  for (int64_t r = 0; r < rows_; ++r) s_out[pos[r]] = s[r];
}

}  // namespace kvb::codecs
