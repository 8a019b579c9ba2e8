#include "generate/generator.h"

#include "base/sys_info.h"

namespace longhaul::generate {

const char* stop_reason_name(StopReason reason) {
  switch (reason) {
    case StopReason::kEndOfGeneration: return "eos";
    case StopReason::kLength: return "length";
    case StopReason::kContextFull: return "context";
    case StopReason::kCallback: return "stopped";
  }
  return "?";
}

Result<GenerateResult> generate(Session& session, const tokenizer::Tokenizer& tokenizer,
                                sampling::SamplerChain& sampler, std::span<const int32_t> prompt,
                                const GenerateOptions& options, const TextFn& on_text, const ProgressFn& progress) {
  GenerateResult result;
  const int32_t n_vocab = session.model().config().n_vocab;
  for (int32_t t : prompt) sampler.accept(t);

  double t0 = now_seconds();
  if (!prompt.empty()) {
    LH_RETURN_IF_ERROR(session.feed(prompt, progress));
  } else if (session.n_past() == 0) {
    return Status::error("empty prompt: give at least one token");
  }
  result.timings.n_prompt = static_cast<int32_t>(prompt.size());
  result.timings.prompt_seconds = now_seconds() - t0;

  tokenizer::StreamingDecoder decoder(tokenizer);
  t0 = now_seconds();
  const int32_t n_predict = options.n_predict;
  while (n_predict < 0 || static_cast<int32_t>(result.tokens.size()) < n_predict) {
    const int32_t token = sampler.sample(session.logits(), n_vocab);
    sampler.accept(token);
    result.tokens.push_back(token);
    if (!options.ignore_eos && tokenizer.is_end_of_generation(token)) {
      result.stop = StopReason::kEndOfGeneration;
      break;
    }
    const std::string piece = decoder.push(token);
    result.text += piece;
    if (on_text && !piece.empty() && !on_text(piece)) {
      result.stop = StopReason::kCallback;
      break;
    }
    if (n_predict >= 0 && static_cast<int32_t>(result.tokens.size()) >= n_predict) {
      result.stop = StopReason::kLength;
      break;
    }
    if (session.context_full()) {
      result.stop = StopReason::kContextFull;
      break;
    }
    const int32_t one[1] = {token};
    LH_RETURN_IF_ERROR(session.feed(one));
  }
  const std::string rest = decoder.flush();
  result.text += rest;
  if (on_text && !rest.empty()) on_text(rest);
  result.timings.n_generated = static_cast<int32_t>(result.tokens.size());
  result.timings.generate_seconds = now_seconds() - t0;
  return result;
}

}  // namespace longhaul::generate
