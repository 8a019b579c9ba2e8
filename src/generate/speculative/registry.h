// The draft sources --spec-type names, one line each in registry.cc.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "generate/speculative/draft_source.h"
#include "kv/head_profile.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace longhaul::generate::speculative {

// What the user asks of speculative decoding (run, chat, batch and serve flags).
struct SpeculativeOptions {
  std::string type = "none";  // draft source, one of draft_source_names() ("none" = plain decoding)
  int32_t draft_max = 16;     // most draft tokens verified per step (tree nodes for a tree source), >= 1
  int32_t draft_min = 0;      // a shorter draft is not verified: the step decodes one token (0 = any draft)
  // Each step drafts the length with the most expected tokens per second, up to draft_max (draft_length.h);
  // false (--draft-fixed): always up to draft_max.
  bool adaptive = true;
  std::string corpus;         // retrieval: a text file added to the datastore ("" = the request's text alone)
  std::string draft_model;    // draft: path of the draft model (-md), loaded by the caller into DraftSourceInputs
  float draft_p_min = 0.5f;   // draft, self: BiLD's fallback, the draft stops below this top probability (0 = never)
  // self: sub-layers the draft leaves out, the first N of the head profile's removal order (-1 = the profile's
  // default_draft_skip)
  int32_t draft_skip = -1;
};

// What a source may need besides the options, from the caller that holds the models.
struct DraftSourceInputs {
  int32_t n_vocab = 0;                                  // the target's vocabulary size
  const tokenizer::Tokenizer* tokenizer = nullptr;      // the target's (retrieval tokenizes its corpus with it)
  const model::Model* draft_model = nullptr;            // draft: the loaded -md model
  const tokenizer::Tokenizer* draft_tokenizer = nullptr;  // draft: its tokenizer, checked against the target's
  ThreadPool* pool = nullptr;                           // the target engine's pool, which a draft model shares
  int32_t n_ctx = 4096;                                 // context of a draft model's sequences
  const model::Model* model = nullptr;                  // self: the target, which drafts with sub-layers skipped
  std::shared_ptr<const kv::HeadProfile> head_profile;  // self: the target's, with its sub-layer order
};

// "none" and every registered source, in registry order.
std::vector<std::string> draft_source_names();

// Checks the options: an unknown type lists the known ones; draft_max in [1, 256], draft_min in [0, draft_max],
// draft_p_min in [0, 1], draft_skip >= -1; "draft" needs a draft model path.
Status validate(const SpeculativeOptions& options);

// The source options.type names, or null for "none". One source may serve every request of a generation loop: it
// receives each request's whole text in propose(). Fails for invalid options, a corpus file that cannot be used, a
// draft model whose vocabulary differs from the target's, or inputs the source needs and did not get.
Result<std::unique_ptr<DraftSource>> make_draft_source(const SpeculativeOptions& options,
                                                       const DraftSourceInputs& inputs);
// The same for the sources that need nothing but the vocabulary size.
Result<std::unique_ptr<DraftSource>> make_draft_source(const SpeculativeOptions& options, int32_t n_vocab);

}  // namespace longhaul::generate::speculative
