#include "generate/speculative/ngram.h"

#include <algorithm>

#include "base/status.h"

namespace longhaul::generate::speculative {

NgramSource::NgramSource(int32_t n_min, int32_t n_max) : n_min_(n_min), n_max_(n_max) {
  LH_CHECK_MSG(n_min >= 1 && n_min <= n_max, "n-gram lengths must satisfy 1 <= n_min <= n_max");
}

int64_t find_latest_earlier(std::span<const int32_t> text, int32_t n) {
  const auto size = static_cast<int64_t>(text.size());
  if (n < 1 || size < int64_t{n} + 1) return -1;
  const std::span<const int32_t> tail = text.subspan(static_cast<size_t>(size - n));
  // Scanning back from the latest start: recent text predicts the next tokens better than the prompt's beginning.
  for (int64_t start = size - n - 1; start >= 0; --start) {
    if (text[static_cast<size_t>(start)] == tail[0] &&
        std::equal(tail.begin(), tail.end(), text.begin() + start))
      return start;
  }
  return -1;
}

void NgramSource::propose(const DraftContext& context, int32_t max_tokens, Draft& draft) {
  int32_t matched = 0;
  lookup(context.tokens, max_tokens, draft.tokens, &matched);
  draft.evidence = match_length_class(matched);
}

int32_t NgramSource::lookup(std::span<const int32_t> text, int32_t max_tokens, std::vector<int32_t>& tokens,
                            int32_t* matched) const {
  tokens.clear();
  if (matched != nullptr) *matched = 0;
  const auto size = static_cast<int64_t>(text.size());
  for (int32_t n = n_max_; n >= n_min_; --n) {
    const int64_t start = find_latest_earlier(text, n);
    if (start < 0) continue;
    // start + n <= size - 1: at least one token follows the occurrence.
    const int64_t from = start + n;
    const int64_t count = std::min<int64_t>(max_tokens, size - from);
    tokens.assign(text.begin() + from, text.begin() + from + count);
    if (matched != nullptr) {
      // The occurrence ends at from - 1 and the tail at size - 1: walk back while they agree.
      int64_t m = n;
      while (m < kMaxCountedMatch && from - 1 - m >= 0 &&
             text[static_cast<size_t>(from - 1 - m)] == text[static_cast<size_t>(size - 1 - m)])
        ++m;
      *matched = static_cast<int32_t>(m);
    }
    return n;
  }
  return 0;
}

}  // namespace longhaul::generate::speculative
