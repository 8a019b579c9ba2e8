// The generation loop — the one prefill -> sample -> decode loop of longhaul, used by run, chat, eval's greedy
// answers, batch and (later) the server. It drives many requests over one Engine with continuous batching: up to
// max_parallel sequences are live; every step carries one decode token of each generating sequence and fills the
// rest of the step's n_batch tokens with prefill chunks of the others (decode first, as llama.cpp's server and
// vLLM's scheduler do, so a long prompt does not stall the streams); when a request finishes, the next waiting one
// takes its place at the next step.
//
// It runs either to completion (run: batch, run, chat) or open-ended (step, as the server's engine thread does):
// requests are submitted and cancelled from other threads while it runs, and each step takes what arrived since the
// last one.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/status.h"
#include "generate/engine.h"
#include "generate/prefix_cache.h"
#include "generate/session.h"
#include "generate/speculative/draft_length.h"
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
  // Each step verifies the draft length with the most expected tokens per second, from the acceptance measured on
  // this request for drafts of the same evidence class (speculative::Draft::evidence) and the step cost measured on
  // the loop (speculative/draft_length.h), up to draft_max; false: always draft_max (what the source proposes of it).
  bool draft_adaptive = true;
  // Tokens the sequence holds before the prompt that the draft source may read too (a chat's earlier turns, which
  // prompt lookup quotes from); empty = the prompt alone.
  std::vector<int32_t> draft_context;
  // Log-probabilities of the sampled tokens under the model's distribution (log-softmax of the raw logits, before
  // temperature and penalties, as OpenAI's API reports them): -1 = none, 0 = the sampled token's, k = also the k
  // most likely tokens' (at most kMaxTopLogprobs). Plain decoding only (a draft step records none).
  int32_t top_logprobs = -1;
};

inline constexpr int32_t kMaxTopLogprobs = 20;

// How an embedding request pools the final normalised hidden states of its prompt's tokens.
enum class Pooling { kNone, kMean, kLast };  // kNone: a generating request

struct Timings {
  int32_t n_prompt = 0;           // prompt tokens, those taken from the prefix cache included
  int32_t n_cached = 0;           // of them, tokens the prefix cache held (not fed)
  int32_t n_generated = 0;        // tokens sampled
  double prompt_seconds = 0.0;    // from the request's start to its first token's logits (prefill)
  double generate_seconds = 0.0;  // from there to its end (decode, sampling included)
  double prompt_tokens_per_s() const { return prompt_seconds > 0 ? (n_prompt - n_cached) / prompt_seconds : 0.0; }
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

// A sampled token's log-probability and the most likely alternatives at its position.
struct TokenLogprob {
  int32_t token = -1;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;  // [top_logprobs] (token, log-probability), most likely first
};
const char* stop_reason_name(StopReason reason);

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (the end-of-generation token included when it stopped there)
  std::string text;             // their detokenized text (end-of-generation token not rendered; cut at a stop string)
  StopReason stop = StopReason::kLength;
  Timings timings;
  double queued_seconds = 0.0;  // waiting for a free sequence before the request started
  SpeculativeStats speculative;  // zeros without a draft source
  // [tokens.size()] with GenerateOptions::top_logprobs >= 0 (fewer when draft steps produced some tokens).
  std::vector<TokenLogprob> logprobs;
  // An embedding request's pooled final hidden state [n_embd] (not normalised); empty for a generating one.
  std::vector<float> embedding;
};

// Called with each newly completed piece of UTF-8 text; returning false stops generation.
using TextFn = std::function<bool(std::string_view)>;

// A generated token as it is emitted (not called for an end-of-generation token, nor for the token that
// completes a stop string).
struct TokenEvent {
  int32_t token = -1;
  std::string_view text;                // the UTF-8 text it completed (may be empty: part of a character)
  const TokenLogprob* logprob = nullptr;  // with GenerateOptions::top_logprobs >= 0, else null
};
// Returning false stops generation (finish reason kCallback).
using TokenFn = std::function<bool(const TokenEvent&)>;

// One request of the loop.
struct Request {
  std::vector<int32_t> prompt;  // fed before generating; may be empty when `seq` already holds context
  // The request's sampler; shared so that a caller (chat) can keep one chain's history across requests.
  std::shared_ptr<sampling::SamplerChain> sampler;
  GenerateOptions options;
  TextFn on_text;       // streamed text (may be null)
  TokenFn on_token;     // streamed tokens with their text and log-probabilities (may be null)
  // Called once when the request ends (done, failed or cancelled), on the thread that runs the loop, before the
  // loop's on_done (may be null).
  std::function<void(const Result<GenerateResult>&)> on_end;
  ProgressFn progress;  // prefill progress, per chunk; false cancels the request (may be null)
  // An existing sequence to continue (a Session's), or -1: a new sequence with `sequence`'s policy, removed when
  // the request ends.
  kv::SeqId seq = -1;
  SequenceOptions sequence;
  // With a new sequence: start from the Generator's prefix cache when it holds a prefix of the prompt, and offer
  // the sequence's blocks to it after the prefill and at the end. Ignored without a cache or for a sequence whose
  // policy cannot share a prefix (PrefixCache::cacheable).
  bool use_prefix_cache = false;
  // With an empty prompt on an existing sequence: the logits [n_vocab] of its last token, to sample the first
  // token from.
  std::vector<float> last_logits;
  // Not kNone: an embedding request. Its prompt is fed (in chunks, beside the other requests' steps) and the final
  // normalised hidden states are pooled into GenerateResult::embedding; nothing is generated.
  Pooling pooling = Pooling::kNone;
  // The index of a request submitted before this one with the same prompt and sequence options (another choice
  // of an n > 1 request), or -1. The request then waits until that one's prompt is fed and starts as a fork of its
  // sequence (Engine::fork: the prompt's pages shared, copied on write), sampling its first token from the same
  // logits: the prompt is prefilled once. When the fork cannot happen (that request ended, the policy cannot fork),
  // it starts on its own.
  int64_t fork_of = -1;
  // KV memory (bytes) the request may come to hold, for admission under a budget (set_kv_budget); 0 = its prompt
  // and n_predict tokens (its context when n_predict is -1) at the sequence's cell size.
  int64_t kv_reserve_bytes = 0;
};

class Generator {
 public:
  // max_parallel: requests live at once (at most the engine's max_sequences).
  Generator(Engine& engine, const tokenizer::Tokenizer& tokenizer, int32_t max_parallel);
  ~Generator();
  Generator(const Generator&) = delete;
  Generator& operator=(const Generator&) = delete;
  // Requests with use_prefix_cache go through `cache` (not owned; must outlive the runs; null = none). Its donor
  // sequences count against the engine's max_sequences: they make way when a request needs a sequence.
  void set_prefix_cache(PrefixCache* cache) { prefix_cache_ = cache; }

  using DoneFn = std::function<void(size_t, const Result<GenerateResult>&)>;

  // Queues a request; returns its index (requests are numbered in submission order). Thread-safe: may be called
  // from any thread, also while another thread runs the loop; the next step takes it.
  size_t submit(Request request);
  // Ends request `index` at the next step, wherever it is (queued or running): its sequence is removed and its
  // pages freed then, and on_done gets a "cancelled" error. An index that already ended is ignored. Thread-safe.
  void cancel(size_t index);

  // Runs steps until every submitted request has finished. A request that cannot run (its prompt does not fit its
  // context, its policy is unknown, ...) gets an error result and the others go on; the call fails only when a
  // step itself fails. on_done(index, result) runs as each request ends (may be null); on_step(n_done,
  // n_generated_total) after every step (may be null: progress displays).
  Status run(const DoneFn& on_done = nullptr, const std::function<void(size_t, int64_t)>& on_step = nullptr);
  Result<GenerateResult>& result(size_t i) { return entries_.at(i).result; }
  // The logits [n_vocab] the last token of request i was sampled from, for a request on an existing sequence (a
  // Session keeps them); empty for the others.
  const std::vector<float>& final_logits(size_t i) const { return entries_.at(i).final_logits; }

  // Open-ended use (a server's engine thread, the one thread that drives the engine): on_done runs on that thread
  // as each request ends, and then the request's result is dropped (result() no longer has it), so memory stays
  // flat however many requests pass.
  void set_on_done(DoneFn on_done) { on_done_ = std::move(on_done); keep_results_ = false; }
  // One step: takes submissions and cancellations, admits waiting requests, runs one engine step over the live
  // ones. Does nothing when there is no work. A failed engine step fails the live requests (each gets the error).
  Status step();
  // Waits up to `seconds` for work (a submission, a cancellation, a waiting or running request); true when there
  // is some. Called by the engine thread; wake() (any thread) ends the wait early.
  bool wait_for_work(double seconds);
  void wake();
  // Admission by KV memory: a waiting request starts only when the live requests' reservations plus its own
  // (Request::kv_reserve_bytes) fit in `bytes`, or when nothing runs. 0 = no budget (max_parallel alone).
  void set_kv_budget(int64_t bytes) { kv_budget_bytes_ = bytes; }

  // Counts for monitoring (engine thread; the server copies them out after each step).
  int32_t n_live() const { return static_cast<int32_t>(live_.size()); }
  int32_t n_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  int64_t kv_reserved_bytes() const { return kv_reserved_bytes_; }
  int32_t last_step_tokens() const { return last_step_tokens_; }

 private:
  struct Live;
  // What the loop keeps of a submitted request until it ends (and, unless open-ended, its result after).
  struct Entry {
    Request request;
    Result<GenerateResult> result = Status::error("not run");
    std::vector<float> final_logits;
    double submitted_at = 0.0;
    int64_t reserve_bytes = 0;
  };
  // Moves submissions into the queue and applies cancellations (engine thread).
  void take_submissions();
  bool busy() const;
  Status start(size_t index);
  // A request with a draft source: the text the source reads, verification's random stream, acceptance estimates.
  void start_draft(Live& live, const Request& req);
  // Starts waiting request `index` as a fork of `parent`, whose prompt was just fed and gave `logits`; false when
  // it cannot (it then stays waiting).
  bool start_fork(size_t index, Live& parent, const float* logits);
  // True while request `index` waits for its fork_of request's prompt.
  bool waits_for_fork(size_t index) const;
  int64_t reserve_bytes(const Request& req) const;
  // Records the log-probabilities of `token` sampled from `logits` when the request asks for them.
  void record_logprobs(Live& live, const float* logits, int32_t token);
  // After a prefill chunk of an embedding request: adds its hidden states to the pool.
  void pool_embeddings(Live& live, const StepResult& out, size_t i, int32_t n_tokens);
  // Samples from `logits`; true when the request is finished.
  bool take_token(Live& live, const float* logits);
  // Records a token the sampler has accepted; true when it ends the request (all but a full context).
  bool emit(Live& live, int32_t token);
  // Speculative decoding: asks the request's draft source for a draft that fits `budget` step tokens and, when it
  // proposes one, sets live's step tokens (the pending token, then the draft); false: a plain decode step.
  bool plan_draft(Live& live, int32_t budget, int32_t n_other_tokens, int32_t n_other_outputs);
  // After a draft step: the verification walk, the kept path, the source's lesson. `finished` when it ended.
  Status take_verified(Live& live, const StepResult& out, size_t i, bool& finished);
  // Hands the source the logits a step produced for the request's tokens [n] (parents: chain when empty), with
  // the request's first n_text tokens as its context (the text up to tokens[0]; all of it by default).
  void observe(Live& live, std::span<const int32_t> tokens, std::span<const int32_t> parents, const float* logits,
               int32_t n_accepted, std::span<const int32_t> path = {}, size_t n_text = SIZE_MAX);
  void finish(Live& live, Result<GenerateResult> result);

  Engine& engine_;
  const tokenizer::Tokenizer& tokenizer_;
  PrefixCache* prefix_cache_ = nullptr;
  int32_t max_parallel_;
  // Engine-thread state.
  std::unordered_map<size_t, Entry> entries_;  // by index: queued, running, and (unless open-ended) ended
  std::deque<size_t> waiting_;
  std::vector<std::unique_ptr<Live>> live_;
  size_t n_done_ = 0;
  int64_t n_generated_ = 0;
  DoneFn on_done_;
  bool keep_results_ = true;
  int64_t kv_budget_bytes_ = 0;
  int64_t kv_reserved_bytes_ = 0;  // sum of the live requests' reservations
  int32_t last_step_tokens_ = 0;
  speculative::StepCostModel step_cost_;  // a step's time (with the sampling after it) by size, for draft lengths
  std::vector<SequenceStep> steps_;
  std::vector<Live*> step_live_;  // [steps_.size()]
  std::vector<int32_t> accepted_nodes_;  // scratch of take_verified: the draft nodes a step accepted
  std::vector<double> draft_estimates_;  // scratch of plan_draft: the acceptance estimates per draft node
  StepResult out_;
  // Shared with submitting threads, guarded by mutex_.
  mutable std::mutex mutex_;
  std::condition_variable work_;
  size_t next_index_ = 0;
  std::vector<std::pair<size_t, Entry>> inbox_;
  std::vector<size_t> cancelled_;
  bool woken_ = false;
};

// One request on a session's sequence (run, chat, eval): feeds `prompt` (may be empty when the session already
// holds context) and generates.
Result<GenerateResult> generate(Session& session, const tokenizer::Tokenizer& tokenizer,
                                sampling::SamplerChain& sampler, std::span<const int32_t> prompt,
                                const GenerateOptions& options, const TextFn& on_text = nullptr,
                                const ProgressFn& progress = nullptr);

}  // namespace longhaul::generate
