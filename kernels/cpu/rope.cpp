#include "kernels/cpu/rope.h"

#include <cmath>

namespace kvb::kernels::rope {

bool parse(const std::string& s, Style* out) {
  if (s == "half") *out = Style::kHalf;
  else if (s == "interleaved") *out = Style::kInterleaved;
  else if (s == "none") *out = Style::kNone;
  else return false;
  return true;
}

const char* name(Style s) {
  switch (s) {
    case Style::kHalf: return "half";
    case Style::kInterleaved: return "interleaved";
    case Style::kNone: return "none";
  }
  return "none";
}

void angle_cos_sin(int64_t pos, int i, int d, double theta, double* c, double* s) {
  const double ang = static_cast<double>(pos) * std::pow(theta, -2.0 * i / d);
  *c = std::cos(ang);
  *s = std::sin(ang);
}

namespace {

void fill(Style st, int d, double theta, int64_t pos, int P, float* c, float* s) {
  for (int i = 0; i < P; ++i) {
    double cd = 1, sd = 0;
    if (st != Style::kNone) angle_cos_sin(pos, i, d, theta, &cd, &sd);
    c[i] = static_cast<float>(cd);
    s[i] = static_cast<float>(sd);
  }
}

}  // namespace

void apply(float* x, int d, int64_t pos, Style st, double theta) {
  if (st == Style::kNone) return;
  const int P = d / 2;
  std::vector<float> c(static_cast<size_t>(P)), s(static_cast<size_t>(P));
  fill(st, d, theta, pos, P, c.data(), s.data());
  rotate_row(x, st, P, c.data(), s.data(), 1.f);
}

Table::Table(Style st, int d_, double theta, int64_t pos0_, int64_t n_)
    : style(st), d(d_), P(d_ / 2), pos0(pos0_), n(n_) {
  if (style == Style::kNone) return;
  cs.resize(static_cast<size_t>(n) * P);
  sn.resize(cs.size());
  for (int64_t r = 0; r < n; ++r) fill(style, d, theta, pos0 + r, P, &cs[r * P], &sn[r * P]);
}

void Table::apply(float* x, int64_t row) const {
  if (style != Style::kNone) rotate_row(x, style, P, &cs[row * P], &sn[row * P], 1.f);
}

void Table::unapply(float* x, int64_t row) const {
  if (style != Style::kNone) rotate_row(x, style, P, &cs[row * P], &sn[row * P], -1.f);
}

BlockTable::BlockTable(Style st, int d_, double theta, int64_t pos0_, int64_t n_)
    : style(st), d(d_), P(d_ / 2), pos0(pos0_), n(n_) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  coarse_c.resize(static_cast<size_t>(blocks) * P);
  coarse_s.resize(coarse_c.size());
  fine_c.resize(static_cast<size_t>(kBlock) * P);
  fine_s.resize(fine_c.size());
  for (int64_t b = 0; b < blocks; ++b)
    fill(style, d, theta, pos0 + kBlock * b, P, &coarse_c[b * P], &coarse_s[b * P]);
  for (int j = 0; j < kBlock; ++j) fill(style, d, theta, j, P, &fine_c[j * P], &fine_s[j * P]);
}

void BlockTable::cos_sin(int64_t r, float* c, float* s) const {
  const float* cc = &coarse_c[(r / kBlock) * P];
  const float* cs = &coarse_s[(r / kBlock) * P];
  const float* fc = &fine_c[(r % kBlock) * P];
  const float* fs = &fine_s[(r % kBlock) * P];
  for (int i = 0; i < P; ++i) add_angles(cc[i], cs[i], fc[i], fs[i], &c[i], &s[i]);
}

void BlockTable::apply(float* x, const float* c, const float* s) const { rotate_row(x, style, P, c, s, 1.f); }

}  // namespace kvb::kernels::rope
