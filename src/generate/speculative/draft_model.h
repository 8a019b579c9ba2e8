// Drafts from a small model with the target's tokenizer (`--spec-type draft -md MODEL`), with the fallback and
// rollback policies of BiLD (Kim et al., 2023, "Speculative Decoding with Big Little Decoder").
//
// Fallback: the draft model writes greedily, one token per step of its own, and hands over to the target as soon
// as its own top probability falls below a threshold (--draft-p-min, BiLD's alpha_FB; llama.cpp's flag of the
// same meaning): an unsure draft token is usually rejected, and every further token drafted after it is wasted
// work of both models.
// Rollback: BiLD's target rolls back the draft from the first token whose distance to its own prediction exceeds
// a threshold, and the draft model rolls its state back to the kept tokens. A positive threshold keeps tokens the
// target would not have produced, so it changes the output; here the threshold is the one that keeps the output
// exactly the target's — verification (verify.h) rejects from the first token the target's own rule does not
// accept — and the draft model's state rolls back to the text the target kept, at the next propose(), by dropping
// what it holds past the common prefix with the request's text (its KV cells truncated, as the target's are).
//
// The greedy draft is a deterministic function of the text (a point mass q), so verification's rule for
// deterministic sources is the exact speculative sampling rule for it.
//
// Both models share the target engine's thread pool (Engine::create's pool): the draft engine steps between the
// target's steps, from the same thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "generate/engine.h"
#include "generate/speculative/draft_source.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace longhaul::generate::speculative {

// What the draft source needs of a model: next-token logits after a request's text, with the text held between
// calls (a KV cache), so that a step costs one token.
class DraftModel {
 public:
  virtual ~DraftModel() = default;
  virtual int32_t n_vocab() const = 0;
  // Makes the request's state hold exactly `tokens` (non-empty): drops what it holds past their common prefix (the
  // rollback) and feeds the rest, at least the last token. Returns the logits [n_vocab] after the last token,
  // valid until the next call; fails when the model's context cannot hold them.
  virtual Result<const float*> sync(uint64_t request, std::span<const int32_t> tokens) = 0;
  // Appends one token to the request's state; the logits [n_vocab] after it.
  virtual Result<const float*> append(uint64_t request, int32_t token) = 0;
  // Forgets the request.
  virtual void end(uint64_t request) = 0;
};

// A DraftModel on an Engine of its own (one full-policy sequence per request) over `model`. With `skip`, the
// engine's steps leave those sub-layers out (self-speculation, self_draft.h): the target's own loaded model, but a
// KV cache of the draft's own, so the draft's tentative tokens never enter the cache the target reads.
class EngineDraftModel final : public DraftModel {
 public:
  // pool: the target engine's, shared (not owned), or null for a pool of the draft engine's own. n_ctx: context
  // of each request's sequence.
  static Result<std::unique_ptr<EngineDraftModel>> create(const model::Model& model, ThreadPool* pool, int32_t n_ctx,
                                                          const model::SublayerSkip& skip = {});

  int32_t n_vocab() const override;
  Result<const float*> sync(uint64_t request, std::span<const int32_t> tokens) override;
  Result<const float*> append(uint64_t request, int32_t token) override;
  void end(uint64_t request) override;

 private:
  struct Sequence {
    kv::SeqId seq = -1;
    std::vector<int32_t> tokens;  // what the sequence holds
  };
  explicit EngineDraftModel(std::unique_ptr<Engine> engine) : engine_(std::move(engine)) {}
  Result<Sequence*> sequence(uint64_t request);

  std::unique_ptr<Engine> engine_;
  std::map<uint64_t, Sequence> sequences_;
  std::vector<float> logits_;  // [n_vocab] of the last call
};

class DraftModelSource final : public DraftSource {
 public:
  static constexpr float kDefaultFallback = 0.5f;  // BiLD's alpha_FB range is 0.2..0.9; llama.cpp defaults to 0.75

  // fallback: the draft stops before a token whose probability under the draft model is below it (0 = never).
  // name: the --spec-type it serves ("draft"; "self" for the target with sub-layers skipped).
  DraftModelSource(std::unique_ptr<DraftModel> model, float fallback, std::string name = "draft");

  std::string name() const override { return name_; }
  // The draft model's greedy continuation of the text, until max_tokens or the fallback rule stops it; nothing
  // when the draft model cannot hold the text.
  void propose(const DraftContext& context, int32_t max_tokens, Draft& draft) override;
  void end(uint64_t request) override { model_->end(request); }

  int64_t n_fallbacks() const { return n_fallbacks_; }  // drafts the fallback rule ended

 private:
  std::unique_ptr<DraftModel> model_;
  float fallback_;
  std::string name_;
  int64_t n_fallbacks_ = 0;
};

// Fails unless the two tokenizers have the same vocabulary — the same size and the same text for every token id —
// naming the first difference.
Status check_same_vocabulary(const tokenizer::Tokenizer& target, const tokenizer::Tokenizer& draft);

// The id of the largest of `logits` [n_vocab] (the lower id on a tie) and its softmax probability.
std::pair<int32_t, float> top_probability(const float* logits, int32_t n_vocab);

}  // namespace longhaul::generate::speculative
