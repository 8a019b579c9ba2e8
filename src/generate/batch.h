// Offline batch inference (`longhaul batch`), what vLLM's LLM.generate(prompts) gives Python users: a JSONL file of
// requests, validated whole before anything runs, then run through the generation loop with continuous batching,
// one JSON line out per request, in input order.
//
// Input: one JSON object per line (blank lines are skipped):
//   {"prompt": "..."} or {"messages": [{"role": "...", "content": "..."}, ...]} (the model's chat format),
//   optional "max_tokens" (>= 1), "temperature" (>= 0; 0 = greedy), "top_p" (in (0, 1]), "seed" (>= 0),
//   "stop" (a string or a list of strings), "kv_policy" (as --kv-policy: name[:key=value:...]), "spec_type" (as
//   --spec-type: none, ngram, recycle, aded, retrieval, draft).
// Unknown fields and wrong types are errors naming the line.
// Output per request: {"id": line number, "text", "tokens": [ids], "finish_reason": "stop" | "length",
//   "prompt_tokens", "completion_tokens", "time_to_first_token_s", "tokens_per_s"[, "cached_tokens"]} ("stop" for an end-of-generation
//   token or a stop string, "length" for max_tokens or a full context), with speculative decoding also
//   "speculative": {"type", "steps", "drafted", "accepted", "mean_accepted_length", "acceptance_rate"}; or {"id",
//   "error"} for a request that failed
//   while running (a validated file has none but for cancelled or out-of-memory runs).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "generate/engine.h"
#include "generate/generator.h"
#include "generate/speculative/registry.h"
#include "kv/kv_policy.h"
#include "model/model.h"
#include "sampling/sampling_options.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/tokenizer.h"

namespace longhaul::generate {

// One line of the input, as written.
struct BatchLine {
  int32_t line = 0;                                // 1-based line number in the file
  std::optional<std::string> prompt;               // "prompt"
  std::vector<tokenizer::ChatMessage> messages;    // "messages" (when prompt is unset)
  std::optional<int32_t> max_tokens;
  std::optional<float> temperature;
  std::optional<float> top_p;
  std::optional<uint32_t> seed;
  std::vector<std::string> stop;
  std::optional<std::string> kv_policy;
  std::optional<std::string> spec_type;
};

// Parses the whole file; the first problem fails the call with "line N: <problem>".
Result<std::vector<BatchLine>> parse_batch_lines(std::string_view text);

// What the command line sets for every request (a line's fields override them).
struct BatchDefaults {
  sampling::SamplingOptions sampling;
  int32_t n_predict = 128;           // --n-predict (-1 = until end of generation or a full context)
  bool ignore_eos = false;           // --ignore-eos: generate max_tokens even past end-of-generation tokens
  std::string kv_policy = "full";    // --kv-policy (a line's "kv_policy" replaces it whole)
  std::shared_ptr<const kv::HeadProfile> head_profile;  // the model's, for duo (null = none)
  model::PrefillAttentionOptions prefill_attn;  // --prefill-attn, for every request
  int32_t n_ctx = 4096;              // context size of each sequence
  speculative::SpeculativeOptions speculative;  // --spec-type, --draft-max, --draft-min, --spec-corpus, -md
  // What a draft source needs besides its options (a draft model, the engine's pool); n_vocab and tokenizer are
  // filled in by prepare_batch.
  speculative::DraftSourceInputs draft_inputs;
};

// A validated request, ready to run.
struct BatchJob {
  int32_t line = 0;
  std::string spec_type = "none";  // the draft source options.draft is (shared by the jobs of one type)
  std::vector<int32_t> prompt_ids;
  sampling::SamplingOptions sampling;
  GenerateOptions options;
  SequenceOptions sequence;
};

// Checks and prepares every line before anything runs: tokenizes each prompt (chat messages through the model's
// chat format, whose markers alone become control tokens), builds each line's KV policy once for `model` (an
// unknown policy or a rejected parameter names the line), checks the sampling values, and refuses a prompt that
// does not fit its context (prompt tokens must leave room for one generated token under a policy that does not
// evict). Fails with "line N: <problem>".
Result<std::vector<BatchJob>> prepare_batch(const std::vector<BatchLine>& lines, const model::Model& model,
                                            const tokenizer::Tokenizer& tokenizer, tokenizer::ChatFormat chat_format,
                                            const BatchDefaults& defaults);

// The statistics of a request that ran with a draft source as a JSON object (the batch output's "speculative",
// run --json's): {"type", "steps", "drafted", "accepted", "mean_accepted_length", "acceptance_rate"}.
std::string speculative_stats_json(const std::string& type, const SpeculativeStats& stats);

// Progress of a batch run: requests done, requests in all, generated tokens so far, seconds since the start.
using BatchProgressFn = std::function<void(size_t done, size_t total, int64_t generated, double seconds)>;

// Runs the jobs with up to `parallel` sequences at once on `engine` (whose max_sequences must allow them) and
// writes one JSON line per job to `write`, in job order, each as soon as it and every earlier one are done. With a
// prefix cache (--prefix-cache; null = none) every job may start from a cached prefix of its prompt and each line
// also gives "cached_tokens"; the cache's donor sequences use the engine's sequences beyond `parallel`.
Status run_batch(Engine& engine, const tokenizer::Tokenizer& tokenizer, const std::vector<BatchJob>& jobs,
                 int32_t parallel, const std::function<Status(const std::string&)>& write,
                 const BatchProgressFn& progress = nullptr, PrefixCache* prefix_cache = nullptr);

}  // namespace longhaul::generate
