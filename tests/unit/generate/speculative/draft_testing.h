// Shorthands shared by the draft source tests.
#pragma once

#include <vector>

#include "generate/speculative/draft_source.h"

namespace longhaul::generate::speculative::testing {

// What `source` proposes after `text` (request 0) for at most max_tokens.
inline Draft propose(DraftSource& source, const std::vector<int32_t>& text, int32_t max_tokens) {
  Draft d;
  source.propose({0, text}, max_tokens, d);
  return d;
}

}  // namespace longhaul::generate::speculative::testing
