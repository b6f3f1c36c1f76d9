#pragma once
/// The windows `kvbench e2e` evaluates (docs/e2e.md §1): window w holds C + N + 1 tokens: the prompt (C), the
/// continuation (N, fed teacher-forced) and the token after it (the last prediction's target).
#include <cstdint>
#include <string>
#include <vector>

#include "kvb/capture/llama2.h"
#include "kvb/e2e/e2e_config.h"

namespace kvb::e2e {

struct Window {
  int index = 0;           ///< position in the text: tokens [index·(C+N), index·(C+N) + C+N+1)
  bool calibration = false;
  std::string id;          ///< "w<index>"
  std::vector<int32_t> tokens;
};

/// The calibration windows, then the evaluated ones. DataError naming the file when the text is missing,
/// holds a token outside the vocabulary, or is too short for the windows asked for; UsageError when C + N
/// does not fit the model's context.
std::vector<Window> load_windows(const ModelSpec& spec, const Llama2Model& model);

}  // namespace kvb::e2e
