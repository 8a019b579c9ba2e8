// What the retrieval tasks (passkey, niah*) share: feeding a prompt and answering it greedily through the
// session's policy, and turning a (length, depth) point's samples into its row.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "base/status.h"
#include "eval/task.h"
#include "generate/session.h"
#include "tokenizer/tokenizer.h"

namespace longhaul::eval {

// Sums over the samples of one (length, depth) point.
struct RetrievalPoint {
  double score = 0;        // sum of the samples' scores in [0, 1]
  double prefill_s = 0;    // seconds spent feeding prompts
  double decode_s = 0;     // seconds spent generating answers
  int64_t n_prefill = 0;   // prompt tokens fed
  int64_t n_decode = 0;    // answer tokens fed back (one-token steps)
  int64_t kv_bytes = 0;    // most K/V bytes the cache held after an answer
  int64_t keys_read = 0;   // key cells the answers' decode tokens read (Session::keys_read), over layers and heads
  int64_t keys_held = 0;   // the cells the cache held when they read them

  // The point's row: mean score as accuracy, tokens/s of both phases, peak RSS now.
  EvalRow row(const std::string& policy, int32_t length, double depth, int32_t samples) const;
};

// Resets the session, feeds `prompt`, then picks the argmax token up to max_new times, stopping at an
// end-of-generation token or as soon as done(text so far) holds (done may be null: never early). Adds the
// timings and the cache size to `point`; returns the answer's text.
Result<std::string> answer_greedily(generate::Session& session, const tokenizer::Tokenizer& tokenizer,
                                    std::span<const int32_t> prompt, int32_t max_new,
                                    const std::function<bool(const std::string&)>& done, RetrievalPoint& point);

}  // namespace longhaul::eval
