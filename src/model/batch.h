// The tokens one forward step processes. A step may carry tokens of several
// sequences (prefill of one prompt, decode of many, or a mix), so batching and
// the server need no second code path.
#pragma once

#include <cstdint>
#include <vector>

#include "kv/kv_cache.h"

namespace longhaul::model {

struct Batch {
  std::vector<int32_t> tokens;     // [n_tokens] token ids
  std::vector<int32_t> positions;  // [n_tokens] position of each token in its sequence
  std::vector<kv::SeqId> seq_ids;  // [n_tokens] sequence of each token; a sequence's tokens appear in position order
  std::vector<uint8_t> logits;     // [n_tokens] 1 = return this token's logits

  int32_t size() const { return static_cast<int32_t>(tokens.size()); }
  void clear() {
    tokens.clear();
    positions.clear();
    seq_ids.clear();
    logits.clear();
  }
  void add(int32_t token, int32_t position, kv::SeqId seq, bool want_logits) {
    tokens.push_back(token);
    positions.push_back(position);
    seq_ids.push_back(seq);
    logits.push_back(want_logits ? 1 : 0);
  }
  int32_t n_logits() const {
    int32_t n = 0;
    for (uint8_t l : logits) n += l;
    return n;
  }
};

}  // namespace longhaul::model
