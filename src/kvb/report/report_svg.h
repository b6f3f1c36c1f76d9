#pragma once
/// `kvbench report`'s figures as inline SVG (no script, no external reference, no xmlns needed inside HTML),
/// drawn from a report Section (report_analysis.h) — the figures of scripts/plot_results.py:
///  - fidelity_svg: cosine mean vs bits_per_element_with_fixed, one colour per codec, the Pareto frontier
///    ringed and joined, frontier points labelled; every point has a <title> tooltip;
///  - throughput_svg: attend throughput (median queries/s) vs bits with fixed state, a log axis when the
///    values span more than a factor of 20, the fp16 reference as a dashed line; "" when no cell was timed;
///  - heatmap_svg: one row per ok cell with per-layer cosine means, one column per layer, colour by value
///    (the colour bar gives the range); "" when no cell reports per-layer cosine.
/// Every string drawn is escaped (html_escape).
#include <string>

#include "kvb/report/report_analysis.h"

namespace kvb::report {

/// & < > " ' as character references.
std::string html_escape(const std::string& s);
/// The colour of codec `i` (a 10-colour categorical palette, repeating).
const char* codec_color(size_t i);

std::string fidelity_svg(const Section& s);
std::string throughput_svg(const Section& s);
std::string heatmap_svg(const Section& s);

}  // namespace kvb::report
