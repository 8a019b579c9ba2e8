#include "eval/greedy_answer.h"

#include <algorithm>
#include <vector>

#include "base/sys_info.h"
#include "generate/generator.h"
#include "sampling/sampler_chain.h"

namespace longhaul::eval {

EvalRow RetrievalPoint::row(const std::string& policy, int32_t length, double depth, int32_t samples) const {
  EvalRow r;
  r.policy = policy;
  r.length = length;
  r.depth = depth;
  r.accuracy = score / samples;
  r.kv_bytes = kv_bytes;
  if (keys_held > 0) r.keys_read = static_cast<double>(keys_read) / static_cast<double>(keys_held);
  r.peak_rss_bytes = peak_rss_bytes();
  if (prefill_s > 0) r.prefill_tps = static_cast<double>(n_prefill) / prefill_s;
  if (decode_s > 0 && n_decode > 0) r.decode_tps = static_cast<double>(n_decode) / decode_s;
  return r;
}

Result<std::string> answer_greedily(generate::Session& session, const tokenizer::Tokenizer& tokenizer,
                                    std::span<const int32_t> prompt, int32_t max_new,
                                    const std::function<bool(const std::string&)>& done, RetrievalPoint& point) {
  session.reset();
  sampling::SamplingOptions greedy;
  greedy.temperature = 0.0f;  // argmax, first index on ties
  LH_ASSIGN_OR_RETURN(sampling::SamplerChain sampler, sampling::SamplerChain::create(greedy));
  generate::GenerateOptions options;
  options.n_predict = max_new;
  options.done = done;
  LH_ASSIGN_OR_RETURN(const generate::GenerateResult answer,
                      generate::generate(session, tokenizer, sampler, prompt, options));
  const generate::Timings& t = answer.timings;
  point.prefill_s += t.prompt_seconds;
  point.n_prefill += t.n_prompt;
  point.decode_s += t.generate_seconds;
  point.n_decode += std::max(0, t.n_generated - 1);  // tokens fed back: every one but the last
  point.kv_bytes = std::max(point.kv_bytes, session.cache().used_bytes());
  const model::AttentionPlan::KeysRead keys = session.keys_read();  // counted from the reset above
  point.keys_read += keys.read;
  point.keys_held += keys.held;
  // The answer's text without an end-of-generation token (the loop never renders it).
  return answer.text;
}

}  // namespace longhaul::eval
