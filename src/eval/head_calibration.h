// Head calibration for the duo policy (kv/policies/duo.cc): which KV heads retrieve from far back in the context.
//
// DuoAttention (Xiao et al., 2024) finds its retrieval heads by optimising a gate per head on synthetic passkey
// data; RazorAttention (Tang et al., 2024) finds them without training, from the attention pattern on repeated
// random tokens. We measure, through the model's own attention (the KV policy score hook), three masses per KV
// head, each averaged over its query heads and the queries that take part:
//   needle     passkey prompts (eval/passkey.h) followed by the key itself: the attention mass that the queries of
//              the question and of the key's tokens put on the key sentence, far back in the filler;
//   induction  a random token sequence R repeated (BOS R R): the mass a query in the second copy puts on the token
//              after the previous occurrence of its own token (what an induction head copies from);
//   echo       the same queries' mass on the previous occurrence itself.
// A head's score is the largest of the three: a head that does any of these retrievals keeps the full cache,
// as RazorAttention keeps the union of its echo and induction heads.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "base/status.h"
#include "kv/head_profile.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace longhaul::eval {

struct CalibrationOptions {
  int32_t passkey_samples = 4;     // passkey prompts, keys at depths spread over (0, 1)
  int32_t passkey_length = 2048;   // tokens per passkey prompt
  int32_t repeat_samples = 2;      // repeated random sequences
  int32_t repeat_tokens = 256;     // length of R in BOS R R
  uint64_t seed = 1234;            // seeds the keys and the random tokens
  int32_t n_threads = 0;           // 0 = all cores
};

// Scores every KV head of `model`; progress(line) after each sample (may be null).
Result<kv::HeadProfile> calibrate_heads(const model::Model& model, const tokenizer::Tokenizer& tokenizer,
                                        const CalibrationOptions& options,
                                        const std::function<void(const std::string&)>& progress);

}  // namespace longhaul::eval
