#include "generate/speculative/registry.h"

#include <functional>
#include <utility>

#include "generate/speculative/aded.h"
#include "generate/speculative/draft_model.h"
#include "generate/speculative/ngram.h"
#include "generate/speculative/recycle.h"
#include "generate/speculative/retrieval.h"
#include "generate/speculative/self_draft.h"

namespace longhaul::generate::speculative {

namespace {

using Made = Result<std::unique_ptr<DraftSource>>;

struct Entry {
  const char* name;
  std::function<Made(const SpeculativeOptions&, const DraftSourceInputs&)> make;
};

template <typename Source, typename... Args>
Made made(Args&&... args) {
  return std::unique_ptr<DraftSource>(std::make_unique<Source>(std::forward<Args>(args)...));
}

Made make_retrieval(const SpeculativeOptions& o, const DraftSourceInputs& in) {
  std::vector<int32_t> corpus;
  if (!o.corpus.empty()) {
    LH_CHECK_MSG(in.tokenizer != nullptr, "retrieval with a corpus needs the target's tokenizer");
    LH_ASSIGN_OR_RETURN(corpus, read_corpus(o.corpus, *in.tokenizer));
  }
  return made<RetrievalSource>(std::move(corpus));
}

Made make_draft_model(const SpeculativeOptions& o, const DraftSourceInputs& in) {
  if (in.draft_model == nullptr) return Status::error("--spec-type draft needs a draft model: -md MODEL");
  if (in.tokenizer != nullptr && in.draft_tokenizer != nullptr)
    LH_RETURN_IF_ERROR(check_same_vocabulary(*in.tokenizer, *in.draft_tokenizer));
  if (in.draft_model->config().n_vocab != in.n_vocab)
    return Status::error("the draft model gives logits over " + std::to_string(in.draft_model->config().n_vocab) +
                         " tokens and the target over " + std::to_string(in.n_vocab) +
                         ": a draft model needs the target's vocabulary");
  LH_ASSIGN_OR_RETURN(std::unique_ptr<EngineDraftModel> model,
                      EngineDraftModel::create(*in.draft_model, in.pool, in.n_ctx));
  return made<DraftModelSource>(std::move(model), o.draft_p_min);
}

Made make_self(const SpeculativeOptions& o, const DraftSourceInputs& in) {
  if (in.model == nullptr) return Status::error("--spec-type self needs the target model");
  if (in.head_profile == nullptr)
    return Status::error("--spec-type self needs the model's head profile with its sub-layer order");
  const int32_t n = o.draft_skip >= 0 ? o.draft_skip : default_draft_skip(in.head_profile->sublayer_order);
  LH_ASSIGN_OR_RETURN(const model::SublayerSkip skip,
                      model::calibrated_sublayer_skip(*in.head_profile, n, in.model->config().n_layer,
                                                      "--draft-skip " + std::to_string(n)));
  return make_self_draft(*in.model, skip, in.pool, in.n_ctx, o.draft_p_min);
}

// One line per source.
const std::vector<Entry>& registry() {
  static const std::vector<Entry> entries = {
      {"ngram", [](const SpeculativeOptions&, const DraftSourceInputs&) { return made<NgramSource>(); }},
      {"recycle", [](const SpeculativeOptions&, const DraftSourceInputs& in) { return made<RecycleSource>(in.n_vocab); }},
      {"aded", [](const SpeculativeOptions&, const DraftSourceInputs& in) { return made<AdedSource>(in.n_vocab); }},
      {"retrieval", make_retrieval},
      {"draft", make_draft_model},
      {"self", make_self},
  };
  return entries;
}

}  // namespace

std::vector<std::string> draft_source_names() {
  std::vector<std::string> names = {"none"};
  for (const Entry& e : registry()) names.emplace_back(e.name);
  return names;
}

Status validate(const SpeculativeOptions& o) {
  bool known = false;
  std::string list;
  for (const std::string& n : draft_source_names()) {
    known = known || n == o.type;
    list += (list.empty() ? "" : ", ") + n;
  }
  if (!known) return Status::error("unknown draft source '" + o.type + "' (known: " + list + ")");
  if (o.draft_max < 1 || o.draft_max > 256)
    return Status::error("--draft-max " + std::to_string(o.draft_max) + " is outside [1, 256]");
  if (o.draft_min < 0 || o.draft_min > o.draft_max)
    return Status::error("--draft-min " + std::to_string(o.draft_min) + " is outside [0, --draft-max " +
                         std::to_string(o.draft_max) + "]");
  if (!(o.draft_p_min >= 0.0f && o.draft_p_min <= 1.0f))
    return Status::error("--draft-p-min " + std::to_string(o.draft_p_min) + " is outside [0, 1]");
  if (o.draft_skip < -1 || o.draft_skip > 2 * kv::kMaxProfileLayers)
    return Status::error("--draft-skip " + std::to_string(o.draft_skip) + " is outside [0, " +
                         std::to_string(2 * kv::kMaxProfileLayers) + "]");
  if (o.type == "draft" && o.draft_model.empty()) return Status::error("--spec-type draft needs a draft model: -md MODEL");
  return Status::ok();
}

Result<std::unique_ptr<DraftSource>> make_draft_source(const SpeculativeOptions& options,
                                                       const DraftSourceInputs& inputs) {
  LH_RETURN_IF_ERROR(validate(options));
  for (const Entry& e : registry())
    if (options.type == e.name) return e.make(options, inputs);
  return std::unique_ptr<DraftSource>();  // "none"
}

Result<std::unique_ptr<DraftSource>> make_draft_source(const SpeculativeOptions& options, int32_t n_vocab) {
  DraftSourceInputs inputs;
  inputs.n_vocab = n_vocab;
  return make_draft_source(options, inputs);
}

}  // namespace longhaul::generate::speculative
