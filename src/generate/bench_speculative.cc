// run_speculative_bench (generate/bench.h): greedy decoding of a real prompt, plain or with a draft source.
#include <algorithm>
#include <string>

#include "generate/bench.h"
#include "generate/session.h"
#include "sampling/sampler_chain.h"

namespace longhaul::generate {

Result<SpeculativeBenchResult> run_speculative_bench(const model::Model& model, const tokenizer::Tokenizer& tokenizer,
                                                     std::span<const int32_t> prompt, int32_t n_gen,
                                                     const BenchOptions& options, const GenerateOptions& decode,
                                                     const DraftSourceFactory& make_draft,
                                                     const BenchProgressFn& progress) {
  if (prompt.empty()) return Status::error("a speculative bench test needs a prompt of at least one token");
  if (n_gen < 2)
    return Status::error("a speculative bench test generates n_gen >= 2 tokens (the first is the prefill's); got " +
                         std::to_string(n_gen));
  if (options.n_reps < 1) return Status::error("repetitions " + std::to_string(options.n_reps) + " must be >= 1");
  if (options.n_warmup < 0) return Status::error("warm-up runs " + std::to_string(options.n_warmup) + " must be >= 0");
  // Room for the prompt, the tokens and the longest draft a last step may verify.
  constexpr int32_t kContextSlack = 16;
  SessionOptions so;
  so.n_ctx = static_cast<int32_t>(prompt.size()) + n_gen + std::max(decode.draft_max, 0) + kContextSlack;
  so.n_batch = options.n_batch;
  so.n_threads = options.n_threads;
  so.skip = options.skip;
  so.kv_policy = options.kv_policy;
  so.head_profile = options.head_profile;
  so.prefill_attn = options.prefill_attn;
  sampling::SamplingOptions greedy;
  greedy.temperature = 0.0f;

  SpeculativeBenchResult result;
  for (int32_t rep = -options.n_warmup; rep < options.n_reps; ++rep) {
    const std::string stage =
        rep < 0 ? std::string("warm-up") : "rep " + std::to_string(rep + 1) + "/" + std::to_string(options.n_reps);
    if (progress) progress(stage, 0, n_gen);
    LH_ASSIGN_OR_RETURN(std::unique_ptr<Session> session, Session::create(model, so));
    LH_ASSIGN_OR_RETURN(sampling::SamplerChain sampler, sampling::SamplerChain::create(greedy));
    GenerateOptions go = decode;
    go.n_predict = n_gen;
    go.ignore_eos = true;
    go.draft = nullptr;
    if (make_draft) {
      LH_ASSIGN_OR_RETURN(go.draft, make_draft(session->engine().pool(), session->n_ctx()));
    }
    LH_ASSIGN_OR_RETURN(GenerateResult run, generate(*session, tokenizer, sampler, prompt, go));
    if (progress) progress(stage, run.timings.n_generated, n_gen);
    if (rep < 0) continue;
    result.tokens_per_s_samples.push_back(run.timings.generate_tokens_per_s());
    const double total_seconds = run.timings.prompt_seconds + run.timings.generate_seconds;
    result.end_to_end_samples.push_back(total_seconds > 0 ? run.timings.n_generated / total_seconds : 0.0);
    result.n_threads = session->n_threads();
    result.kv_policy = session->describe_kv();
    result.stats = run.speculative;
    // Plain decoding counts its steps too: one per token after the prefill's.
    if (!go.draft) result.stats.n_steps = std::max<int64_t>(0, static_cast<int64_t>(run.tokens.size()) - 1);
    result.tokens = std::move(run.tokens);
  }
  const SampleSummary summary = summarize_samples(result.tokens_per_s_samples);
  result.tokens_per_s = summary.mean;
  result.stddev = summary.stddev;
  result.end_to_end_tokens_per_s = summarize_samples(result.end_to_end_samples).mean;
  return result;
}

}  // namespace longhaul::generate
