#include "kvb/report/report_svg.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace kvb::report {

std::string html_escape(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&#39;"; break;
      default: o += c;
    }
  return o;
}

const char* codec_color(size_t i) {
  static const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                   "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  return kPalette[i % 10];
}

namespace {

/// One axis: data range -> pixel range, linear or log10, with "nice" ticks.
struct Axis {
  double lo = 0, hi = 1, p0 = 0, p1 = 1;
  bool log = false;

  double map(double v) const {
    const double a = log ? std::log10(std::max(v, 1e-300)) : v, l = log ? std::log10(lo) : lo,
                 h = log ? std::log10(hi) : hi;
    return p0 + (a - l) / (h - l) * (p1 - p0);
  }
  std::vector<double> ticks() const {
    std::vector<double> t;
    if (log) {
      const int a = static_cast<int>(std::floor(std::log10(lo) + 1e-9)), b = static_cast<int>(std::ceil(std::log10(hi) - 1e-9));
      const bool fine = b - a <= 2;
      for (int k = a; k <= b; ++k)
        for (double m : fine ? std::vector<double>{1, 2, 5} : std::vector<double>{1}) {
          const double v = m * std::pow(10.0, k);
          if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) t.push_back(v);
        }
      return t;
    }
    const double raw = (hi - lo) / 5, mag = std::pow(10.0, std::floor(std::log10(raw)));
    double step = mag;
    for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
      if (m * mag >= raw) {
        step = m * mag;
        break;
      }
    for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step)
      t.push_back(std::abs(v) < step * 1e-9 ? 0.0 : v);
    return t;
  }
};

/// A linear axis over [lo, hi] with 6% padding (or a unit span around a single value).
Axis linear(double lo, double hi, double p0, double p1) {
  Axis a;
  if (!(hi > lo)) {
    const double d = lo == 0 ? 0.5 : std::abs(lo) * 0.05;
    lo -= d;
    hi += d;
  }
  const double pad = (hi - lo) * 0.06;
  a.lo = lo - pad;
  a.hi = hi + pad;
  a.p0 = p0;
  a.p1 = p1;
  return a;
}

Axis logarithmic(double lo, double hi, double p0, double p1) {
  Axis a;
  a.log = true;
  a.lo = lo / 1.3;
  a.hi = hi * 1.3;
  a.p0 = p0;
  a.p1 = p1;
  return a;
}

std::string num(double v) { return fmt::format("{:.4g}", v); }

struct Frame {
  double w = 640, h = 400, left = 64, right = 170, top = 34, bottom = 50;
  double x0() const { return left; }
  double x1() const { return w - right; }
  double y0() const { return h - bottom; }
  double y1() const { return top; }
};

std::string open_svg(const Frame& f, const std::string& title, const std::string& aria) {
  return fmt::format(
      "<svg class=\"plot\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" role=\"img\" aria-label=\"{2}\">\n"
      "<rect x=\"0\" y=\"0\" width=\"{0}\" height=\"{1}\" fill=\"#ffffff\"/>\n"
      "<text x=\"{3}\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{4}</text>\n",
      f.w, f.h, html_escape(aria), f.left, html_escape(title));
}

std::string axes(const Frame& f, const Axis& x, const Axis& y, const std::string& xlabel, const std::string& ylabel) {
  std::string s = fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444\"/>\n",
                              f.x0(), f.y1(), f.x1() - f.x0(), f.y0() - f.y1());
  for (double t : x.ticks()) {
    const double px = x.map(t);
    s += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#e4e4e4\"/>"
                     "<text x=\"{0:.1f}\" y=\"{3}\" font-size=\"11\" text-anchor=\"middle\">{4}</text>\n",
                     px, f.y1(), f.y0(), f.y0() + 15, num(t));
  }
  for (double t : y.ticks()) {
    const double py = y.map(t);
    s += fmt::format("<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#e4e4e4\"/>"
                     "<text x=\"{3}\" y=\"{4:.1f}\" font-size=\"11\" text-anchor=\"end\">{5}</text>\n",
                     f.x0(), py, f.x1(), f.x0() - 5, py + 4, num(t));
  }
  s += fmt::format("<text x=\"{:.1f}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\">{}</text>\n",
                   (f.x0() + f.x1()) / 2, f.h - 12, html_escape(xlabel));
  s += fmt::format("<text x=\"14\" y=\"{0:.1f}\" font-size=\"12\" text-anchor=\"middle\" "
                   "transform=\"rotate(-90 14 {0:.1f})\">{1}</text>\n",
                   (f.y0() + f.y1()) / 2, html_escape(ylabel));
  return s;
}

std::string legend(const Frame& f, const Section& s, const std::vector<size_t>& codecs) {
  std::string o;
  double y = f.y1() + 8;
  for (size_t c : codecs) {
    o += fmt::format("<circle cx=\"{0}\" cy=\"{1}\" r=\"5\" fill=\"{2}\"/><text x=\"{3}\" y=\"{4}\" font-size=\"11\">{5}"
                     "</text>\n",
                     f.x1() + 14, y, codec_color(c), f.x1() + 24, y + 4, html_escape(s.codecs[c]));
    y += 16;
  }
  return o;
}

std::string point(double px, double py, const Row& r, const std::string& tip) {
  return fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"4.5\" fill=\"{}\" fill-opacity=\"0.85\"><title>{}</title>"
                     "</circle>\n",
                     px, py, codec_color(r.codec_index), html_escape(tip));
}

std::vector<size_t> used_codecs(const Section& s, const std::vector<int>& rows) {
  std::vector<size_t> c;
  for (int i : rows)
    if (std::find(c.begin(), c.end(), s.rows[i].codec_index) == c.end()) c.push_back(s.rows[i].codec_index);
  std::sort(c.begin(), c.end());
  return c;
}

}  // namespace

std::string fidelity_svg(const Section& s) {
  std::vector<int> rows;
  for (size_t i = 0; i < s.rows.size(); ++i)
    if (s.rows[i].ok() && s.rows[i].bits_fixed && s.rows[i].cosine) rows.push_back(static_cast<int>(i));
  if (rows.empty()) return "";
  double xl = 1e300, xh = -1e300, yl = 1e300, yh = -1e300;
  for (int i : rows) {
    xl = std::min(xl, *s.rows[i].bits_fixed), xh = std::max(xh, *s.rows[i].bits_fixed);
    yl = std::min(yl, *s.rows[i].cosine), yh = std::max(yh, *s.rows[i].cosine);
  }
  Frame f;
  const Axis x = linear(std::min(0.0, xl), xh, f.x0(), f.x1()), y = linear(yl, yh, f.y0(), f.y1());
  std::string o = open_svg(f, "Fidelity vs bits", "cosine mean vs bits per element with fixed state");
  o += axes(f, x, y, "bits per element (with fixed state)", "cosine (mean)");
  // The frontier, joined, then every point, then rings and labels on the frontier.
  std::string line;
  for (int i : s.frontier) line += fmt::format("{:.1f},{:.1f} ", x.map(*s.rows[i].bits_fixed), y.map(*s.rows[i].cosine));
  if (!line.empty())
    o += fmt::format("<polyline points=\"{}\" fill=\"none\" stroke=\"#333\" stroke-width=\"1.2\" "
                     "stroke-dasharray=\"5 3\"/>\n",
                     line);
  for (int i : rows) {
    const Row& r = s.rows[i];
    o += point(x.map(*r.bits_fixed), y.map(*r.cosine), r,
               fmt::format("{}: {:.4g} bits, cosine {:.6g}", r.label, *r.bits_fixed, *r.cosine));
  }
  for (size_t k = 0; k < s.frontier.size(); ++k) {
    const Row& r = s.rows[s.frontier[k]];
    const double px = x.map(*r.bits_fixed), py = y.map(*r.cosine);
    const double ty = k % 2 == 0 ? py - 10 : py + 18;  // alternate above and below: neighbours often crowd
    const bool left = px > (f.x0() + f.x1()) / 2;
    o += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"8\" fill=\"none\" stroke=\"#000\" stroke-width=\"1.2\"/>"
                     "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"10\" text-anchor=\"{}\" fill=\"{}\">{}</text>\n",
                     px, py, left ? px - 10 : px + 10, ty, left ? "end" : "start", codec_color(r.codec_index),
                     html_escape(r.label));
  }
  o += legend(f, s, used_codecs(s, rows));
  o += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"10\" fill=\"#555\">ringed, dashed: Pareto frontier</text>\n",
                   f.x1() + 8, f.y0());
  return o + "</svg>\n";
}

std::string throughput_svg(const Section& s) {
  std::vector<int> rows;
  for (size_t i = 0; i < s.rows.size(); ++i)
    if (s.rows[i].ok() && s.rows[i].bits_fixed && s.rows[i].attend_qps && *s.rows[i].attend_qps > 0)
      rows.push_back(static_cast<int>(i));
  if (rows.empty()) return "";
  double xl = 1e300, xh = -1e300, yl = 1e300, yh = -1e300;
  for (int i : rows) {
    xl = std::min(xl, *s.rows[i].bits_fixed), xh = std::max(xh, *s.rows[i].bits_fixed);
    yl = std::min(yl, *s.rows[i].attend_qps), yh = std::max(yh, *s.rows[i].attend_qps);
  }
  const bool ref = s.fp16_attend_qps && *s.fp16_attend_qps > 0;
  if (ref) yl = std::min(yl, *s.fp16_attend_qps), yh = std::max(yh, *s.fp16_attend_qps);
  Frame f;
  const Axis x = linear(std::min(0.0, xl), xh, f.x0(), f.x1());
  const Axis y = yh / yl > 20 ? logarithmic(yl, yh, f.y0(), f.y1()) : linear(std::min(0.0, yl), yh, f.y0(), f.y1());
  std::string o = open_svg(f, "Attend throughput vs bits", "attend queries per second vs bits per element");
  o += axes(f, x, y, "bits per element (with fixed state)",
            y.log ? "attend queries/s (median, log)" : "attend queries/s (median)");
  if (ref) {
    const double py = y.map(*s.fp16_attend_qps);
    o += fmt::format("<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#000\" stroke-dasharray=\"6 4\"/>"
                     "<text x=\"{3}\" y=\"{4:.1f}\" font-size=\"10\">fp16 reference {5} q/s</text>\n",
                     f.x0(), py, f.x1(), f.x0() + 4, py - 4, num(*s.fp16_attend_qps));
  }
  for (int i : rows) {
    const Row& r = s.rows[i];
    o += point(x.map(*r.bits_fixed), y.map(*r.attend_qps), r,
               fmt::format("{}: {:.4g} bits, {:.4g} queries/s{}", r.label, *r.bits_fixed, *r.attend_qps,
                           r.attend_vs_fp16 ? fmt::format(" ({:.2f}x fp16)", *r.attend_vs_fp16) : std::string()));
  }
  o += legend(f, s, used_codecs(s, rows));
  return o + "</svg>\n";
}

namespace {

/// A viridis-like ramp, t in [0, 1].
std::string ramp(double t) {
  static const double kStops[5][3] = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
  t = std::clamp(t, 0.0, 1.0) * 4;
  const int k = std::min(3, static_cast<int>(t));
  const double u = t - k;
  int c[3];
  for (int j = 0; j < 3; ++j) c[j] = static_cast<int>(std::lround(kStops[k][j] + u * (kStops[k + 1][j] - kStops[k][j])));
  return fmt::format("#{:02x}{:02x}{:02x}", c[0], c[1], c[2]);
}

}  // namespace

std::string heatmap_svg(const Section& s) {
  if (s.sensitivity.empty() || s.layers.empty()) return "";
  double lo = 1e300, hi = -1e300;
  for (const auto& se : s.sensitivity)
    for (const auto& l : s.rows[se.row].cell->per_layer) {
      const auto it = l.metric_means.find("cosine");
      if (it != l.metric_means.end()) lo = std::min(lo, it->second), hi = std::max(hi, it->second);
    }
  const size_t L = s.layers.size(), R = s.sensitivity.size();
  const double label_w = 230, cw = std::clamp(720.0 / static_cast<double>(L), 6.0, 64.0), ch = 18, top = 44;
  const double w = label_w + cw * static_cast<double>(L) + 110, h = top + ch * static_cast<double>(R) + 40;
  Frame f;
  f.w = w;
  f.h = h;
  f.left = label_w;
  std::string o = open_svg(f, "Per-layer cosine (mean)", "heat map of per-layer cosine means, rows cells, columns layers");
  const size_t every = std::max<size_t>(1, static_cast<size_t>(std::ceil(24.0 / cw)));
  for (size_t j = 0; j < L; j += every)
    o += fmt::format("<text x=\"{:.1f}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{}</text>\n",
                     label_w + cw * (static_cast<double>(j) + 0.5), top - 4, s.layers[j]);
  for (size_t i = 0; i < R; ++i) {
    const Row& r = s.rows[s.sensitivity[i].row];
    const double y = top + ch * static_cast<double>(i);
    o += fmt::format("<text x=\"{}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"end\">{}</text>\n", label_w - 6,
                     y + ch - 5, html_escape(r.label));
    for (const auto& l : r.cell->per_layer) {
      const auto it = l.metric_means.find("cosine");
      if (it == l.metric_means.end()) continue;
      const size_t j = static_cast<size_t>(std::lower_bound(s.layers.begin(), s.layers.end(), l.layer) - s.layers.begin());
      const double t = hi > lo ? (it->second - lo) / (hi - lo) : 1.0;
      o += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{}\" fill=\"{}\"><title>{}, layer {}: "
                       "cosine {:.6g}</title></rect>\n",
                       label_w + cw * static_cast<double>(j), y, cw, ch, ramp(t), html_escape(r.label), l.layer,
                       it->second);
      if (cw >= 44)
        o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"9\" text-anchor=\"middle\" fill=\"{}\">{:.4f}</text>\n",
                         label_w + cw * (static_cast<double>(j) + 0.5), y + ch - 5, t > 0.6 ? "#000" : "#fff", it->second);
    }
  }
  // Colour bar.
  const double bx = label_w + cw * static_cast<double>(L) + 16, bh = std::max(60.0, ch * static_cast<double>(R));
  for (int k = 0; k < 20; ++k)
    o += fmt::format("<rect x=\"{}\" y=\"{:.1f}\" width=\"14\" height=\"{:.1f}\" fill=\"{}\"/>\n", bx,
                     top + bh * (19 - k) / 20.0, bh / 20.0 + 0.5, ramp(k / 19.0));
  o += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"10\">{:.5g}</text><text x=\"{}\" y=\"{:.1f}\" font-size=\"10\">"
                   "{:.5g}</text>\n",
                   bx + 18, top + 9, hi, bx + 18, top + bh, lo);
  o += fmt::format("<text x=\"{}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"middle\">layer</text>\n",
                   label_w + cw * static_cast<double>(L) / 2, h - 12);
  return o + "</svg>\n";
}

}  // namespace kvb::report
