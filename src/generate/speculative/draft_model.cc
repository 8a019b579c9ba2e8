#include "generate/speculative/draft_model.h"

#include <algorithm>
#include <cmath>

namespace longhaul::generate::speculative {

Result<std::unique_ptr<EngineDraftModel>> EngineDraftModel::create(const model::Model& model, ThreadPool* pool,
                                                                   int32_t n_ctx, const model::SublayerSkip& skip) {
  EngineOptions o;
  o.n_ctx = n_ctx;
  o.skip = skip;
  // One sequence per live request of the generation loop (batch --parallel); KV pages are allocated as sequences
  // grow, so the bound costs nothing until used.
  o.max_sequences = 1024;
  LH_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::create(model, o, pool));
  return std::unique_ptr<EngineDraftModel>(new EngineDraftModel(std::move(engine)));
}

int32_t EngineDraftModel::n_vocab() const { return engine_->model().config().n_vocab; }

Result<EngineDraftModel::Sequence*> EngineDraftModel::sequence(uint64_t request) {
  auto it = sequences_.find(request);
  if (it == sequences_.end()) {
    SequenceOptions so;
    so.kv_policy = "full";
    LH_ASSIGN_OR_RETURN(kv::SeqId seq, engine_->add_sequence(so));
    it = sequences_.emplace(request, Sequence{seq, {}}).first;
  }
  return &it->second;
}

Result<const float*> EngineDraftModel::sync(uint64_t request, std::span<const int32_t> tokens) {
  LH_CHECK(!tokens.empty());
  LH_ASSIGN_OR_RETURN(Sequence * s, sequence(request));
  const auto mismatch = std::mismatch(s->tokens.begin(), s->tokens.end(), tokens.begin(), tokens.end());
  // Keep the common prefix, but feed the last token again when it is all there is: its logits are needed.
  const size_t keep = std::min(static_cast<size_t>(mismatch.first - s->tokens.begin()), tokens.size() - 1);
  if (keep < s->tokens.size()) {
    engine_->truncate(s->seq, static_cast<int32_t>(keep));
    s->tokens.resize(keep);
  }
  const std::span<const int32_t> rest = tokens.subspan(keep);
  if (Status st = engine_->feed(s->seq, rest, &logits_); !st.is_ok()) {
    end(request);  // what the sequence holds is unknown now: start over next time
    return st;
  }
  s->tokens.insert(s->tokens.end(), rest.begin(), rest.end());
  return static_cast<const float*>(logits_.data());
}

Result<const float*> EngineDraftModel::append(uint64_t request, int32_t token) {
  LH_ASSIGN_OR_RETURN(Sequence * s, sequence(request));
  if (Status st = engine_->feed(s->seq, {&token, 1}, &logits_); !st.is_ok()) {
    end(request);
    return st;
  }
  s->tokens.push_back(token);
  return static_cast<const float*>(logits_.data());
}

void EngineDraftModel::end(uint64_t request) {
  const auto it = sequences_.find(request);
  if (it == sequences_.end()) return;
  if (engine_->has_sequence(it->second.seq)) engine_->remove(it->second.seq);
  sequences_.erase(it);
}

std::pair<int32_t, float> top_probability(const float* logits, int32_t n_vocab) {
  LH_CHECK(n_vocab >= 1);
  int32_t top = 0;
  for (int32_t i = 1; i < n_vocab; ++i)
    if (logits[i] > logits[top]) top = i;
  double sum = 0.0;
  for (int32_t i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - logits[top]));
  return {top, static_cast<float>(1.0 / sum)};
}

DraftModelSource::DraftModelSource(std::unique_ptr<DraftModel> model, float fallback, std::string name)
    : model_(std::move(model)), fallback_(fallback), name_(std::move(name)) {
  LH_CHECK(model_ != nullptr && fallback >= 0.0f && fallback <= 1.0f);
}

void DraftModelSource::propose(const DraftContext& context, int32_t max_tokens, Draft& draft) {
  if (context.tokens.empty()) return;
  Result<const float*> logits = model_->sync(context.request, context.tokens);
  while (logits.is_ok() && static_cast<int32_t>(draft.size()) < max_tokens) {
    const auto [token, p] = top_probability(*logits, model_->n_vocab());
    if (p < fallback_) {  // BiLD's fallback: the draft model is unsure, the target takes over
      ++n_fallbacks_;
      return;
    }
    draft.tokens.push_back(token);
    if (static_cast<int32_t>(draft.size()) == max_tokens) return;  // the last token need not be fed
    logits = model_->append(context.request, token);
  }
  // A draft model that cannot hold the text (its context is full) drafts nothing; the target goes on alone.
}

Status check_same_vocabulary(const tokenizer::Tokenizer& target, const tokenizer::Tokenizer& draft) {
  if (draft.n_vocab() != target.n_vocab())
    return Status::error("the draft model's vocabulary has " + std::to_string(draft.n_vocab()) +
                         " tokens and the target's " + std::to_string(target.n_vocab()) +
                         ": a draft model needs the target's tokenizer");
  for (int32_t id = 0; id < target.n_vocab(); ++id) {
    if (draft.token_text(id) != target.token_text(id))
      return Status::error("token " + std::to_string(id) + " is '" + draft.token_text(id) +
                           "' in the draft model's vocabulary and '" + target.token_text(id) +
                           "' in the target's: a draft model needs the target's tokenizer");
  }
  return Status::ok();
}

}  // namespace longhaul::generate::speculative
