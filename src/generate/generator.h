// The generation loop — the one prefill -> sample -> decode loop of longhaul, used by run, chat, eval's greedy
// answers, batch and (later) the server. It drives many requests over one Engine with continuous batching: up to
// max_parallel sequences are live; every step carries one decode token of each generating sequence and fills the
// rest of the step's n_batch tokens with prefill chunks of the others (decode first, as llama.cpp's server and
// vLLM's scheduler do, so a long prompt does not stall the streams); when a request finishes, the next waiting one
// takes its place at the next step.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "generate/engine.h"
#include "generate/session.h"
#include "generate/speculative/draft_source.h"
#include "sampling/sampler_chain.h"
#include "tokenizer/tokenizer.h"

namespace longhaul::generate {

struct GenerateOptions {
  int32_t n_predict = 128;  // tokens to generate (-1 = until end of generation or a full context)
  bool ignore_eos = false;  // keep going past end-of-generation tokens
  // Generation ends when the text contains one of these; the text is cut before it (finish reason "stop"). Text
  // already streamed through on_text is not taken back.
  std::vector<std::string> stop;
  // Generation ends as soon as done(text so far) holds (null = never early): e.g. an eval answer is complete.
  std::function<bool(const std::string&)> done;
  // Speculative decoding (generate/speculative/): each decode step also feeds the tokens `draft` proposes,
  // tentatively, and keeps what the target accepts (speculative/verify.h) — the same output as plain decoding, in
  // fewer steps when the guesses are good. Null = plain decoding.
  std::shared_ptr<speculative::DraftSource> draft;
  int32_t draft_max = 16;  // most draft tokens (tree nodes) per step; also capped by the step's room
  int32_t draft_min = 0;   // a shorter draft is not verified: the step decodes one token (0 = any draft)
  // Tokens the sequence holds before the prompt that the draft source may read too (a chat's earlier turns, which
  // prompt lookup quotes from); empty = the prompt alone.
  std::vector<int32_t> draft_context;
};

struct Timings {
  int32_t n_prompt = 0;           // prompt tokens fed
  int32_t n_generated = 0;        // tokens sampled
  double prompt_seconds = 0.0;    // from the request's start to its first token's logits (prefill)
  double generate_seconds = 0.0;  // from there to its end (decode, sampling included)
  double prompt_tokens_per_s() const { return prompt_seconds > 0 ? n_prompt / prompt_seconds : 0.0; }
  // Decode steps per second: the first generated token comes from the prefill's logits.
  double generate_tokens_per_s() const {
    return generate_seconds > 0 && n_generated > 1 ? (n_generated - 1) / generate_seconds : 0.0;
  }
};

// What speculative decoding did for a request.
struct SpeculativeStats {
  int64_t n_steps = 0;     // decode steps (each feeds one token, or one token and a draft)
  int64_t n_drafted = 0;   // draft tokens fed for verification
  int64_t n_accepted = 0;  // of them, accepted by the target
  // Tokens a decode step yields on average, 1 + accepted per step: the "mean accepted length" of the speculative
  // decoding papers (1 = no gain).
  double mean_accepted_length() const { return n_steps > 0 ? 1.0 + static_cast<double>(n_accepted) / n_steps : 0.0; }
  double acceptance_rate() const { return n_drafted > 0 ? static_cast<double>(n_accepted) / n_drafted : 0.0; }
};

enum class StopReason { kEndOfGeneration, kLength, kContextFull, kCallback, kStopString };
const char* stop_reason_name(StopReason reason);

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (the end-of-generation token included when it stopped there)
  std::string text;             // their detokenized text (end-of-generation token not rendered; cut at a stop string)
  StopReason stop = StopReason::kLength;
  Timings timings;
  double queued_seconds = 0.0;  // waiting for a free sequence before the request started
  SpeculativeStats speculative;  // zeros without a draft source
};

// Called with each newly completed piece of UTF-8 text; returning false stops generation.
using TextFn = std::function<bool(std::string_view)>;

// One request of the loop.
struct Request {
  std::vector<int32_t> prompt;  // fed before generating; may be empty when `seq` already holds context
  // The request's sampler; shared so that a caller (chat) can keep one chain's history across requests.
  std::shared_ptr<sampling::SamplerChain> sampler;
  GenerateOptions options;
  TextFn on_text;       // streamed text (may be null)
  ProgressFn progress;  // prefill progress, per chunk; false cancels the request (may be null)
  // An existing sequence to continue (a Session's), or -1: a new sequence with `sequence`'s policy, removed when
  // the request ends.
  kv::SeqId seq = -1;
  SequenceOptions sequence;
  // With an empty prompt on an existing sequence: the logits [n_vocab] of its last token, to sample the first
  // token from.
  std::vector<float> last_logits;
};

class Generator {
 public:
  // max_parallel: requests live at once (at most the engine's max_sequences).
  Generator(Engine& engine, const tokenizer::Tokenizer& tokenizer, int32_t max_parallel);
  ~Generator();
  Generator(const Generator&) = delete;
  Generator& operator=(const Generator&) = delete;

  // Queues a request; results come back in submission order (the returned index).
  size_t submit(Request request);
  // Runs steps until every submitted request has finished. A request that cannot run (its prompt does not fit its
  // context, its policy is unknown, ...) gets an error result and the others go on; the call fails only when a
  // step itself fails. on_done(index, result) runs as each request ends (may be null); on_step(n_done,
  // n_generated_total) after every step (may be null: progress displays).
  Status run(const std::function<void(size_t, const Result<GenerateResult>&)>& on_done = nullptr,
             const std::function<void(size_t, int64_t)>& on_step = nullptr);
  Result<GenerateResult>& result(size_t i) { return results_[i]; }
  size_t size() const { return results_.size(); }
  // The logits [n_vocab] the last token of request i was sampled from, for a request on an existing sequence (a
  // Session keeps them); empty for the others.
  const std::vector<float>& final_logits(size_t i) const { return final_logits_[i]; }

 private:
  struct Live;
  Status start(size_t index);
  // Samples from `logits`; true when the request is finished.
  bool take_token(Live& live, const float* logits);
  // Records a token the sampler has accepted; true when it ends the request (all but a full context).
  bool emit(Live& live, int32_t token);
  // Speculative decoding: asks the request's draft source for a draft that fits `budget` step tokens and, when it
  // proposes one, sets live's step tokens (the pending token, then the draft); false: a plain decode step.
  bool plan_draft(Live& live, int32_t budget);
  // After a draft step: the verification walk, the kept path, the source's lesson. `finished` when it ended.
  Status take_verified(Live& live, const StepResult& out, size_t i, bool& finished);
  // Hands the source the logits a step produced for the request's tokens [n] (parents: chain when empty), with
  // the request's first n_text tokens as its context (the text up to tokens[0]; all of it by default).
  void observe(Live& live, std::span<const int32_t> tokens, std::span<const int32_t> parents, const float* logits,
               int32_t n_accepted, std::span<const int32_t> path = {}, size_t n_text = SIZE_MAX);
  void finish(Live& live, Result<GenerateResult> result);

  Engine& engine_;
  const tokenizer::Tokenizer& tokenizer_;
  int32_t max_parallel_;
  std::vector<Request> requests_;
  std::vector<Result<GenerateResult>> results_;
  std::vector<std::vector<float>> final_logits_;
  std::vector<double> submitted_at_;
  std::deque<size_t> waiting_;
  std::vector<std::unique_ptr<Live>> live_;
  size_t n_done_ = 0;
  int64_t n_generated_ = 0;
  std::function<void(size_t, const Result<GenerateResult>&)> on_done_;
};

// One request on a session's sequence (run, chat, eval): feeds `prompt` (may be empty when the session already
// holds context) and generates.
Result<GenerateResult> generate(Session& session, const tokenizer::Tokenizer& tokenizer,
                                sampling::SamplerChain& sampler, std::span<const int32_t> prompt,
                                const GenerateOptions& options, const TextFn& on_text = nullptr,
                                const ProgressFn& progress = nullptr);

}  // namespace longhaul::generate
