// Passkey retrieval (Mohtashami & Jaggi, 2023, "Landmark Attention"): a 5-digit key
// hidden at a chosen depth of repetitive filler text; the model must repeat it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace longhaul::eval {

struct PasskeyPrompt {
  std::vector<int32_t> tokens;  // [n_tokens] the whole prompt, BOS included when the model adds one
  int32_t key_begin = 0;        // index of the first token of the key sentence
  int32_t key_end = 0;          // one past its last token
};

// A prompt of at most n_tokens tokens (more only when the fixed parts alone are
// longer) with the key sentence after round(depth * n_filler) filler units.
// Pieces are tokenized separately and concatenated, so the key sits at a known index.
PasskeyPrompt build_passkey_prompt(const tokenizer::Tokenizer& tok, int32_t n_tokens, double depth,
                                   const std::string& key);

// True when the answer contains the key (as the paper scores it).
bool passkey_correct(const std::string& answer, const std::string& key);

}  // namespace longhaul::eval
