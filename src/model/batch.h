// The tokens one forward step processes. A step may carry tokens of several
// sequences (prefill chunks of some, decode tokens of others, draft trees of others),
// so batching, serving and speculative decoding need no second code path.
#pragma once

#include <cstdint>
#include <vector>

#include "kv/kv_cache.h"

namespace longhaul::model {

// What the step returns for a token.
enum class TokenOutput : uint8_t {
  kNone = 0,       // nothing (a prompt token whose prediction is not needed)
  kLogits = 1,     // the logits [n_vocab] of the next token
  kEmbedding = 2,  // the final normalised hidden state [n_embd] (embeddings)
};

// A token's parent within the step, for tree verification; kStepRoot = the token follows the sequence's cached
// tokens directly.
constexpr int32_t kStepRoot = -1;

struct Batch {
  std::vector<int32_t> tokens;     // [n_tokens] token ids
  std::vector<int32_t> positions;  // [n_tokens] position of each token in its sequence
  std::vector<kv::SeqId> seq_ids;  // [n_tokens] sequence of each token; a sequence's tokens appear in position order
  std::vector<TokenOutput> outputs;  // [n_tokens] what the step returns for each token
  // Empty: every sequence's tokens form a chain (each sees the ones before it, by position). Otherwise
  // [n_tokens]: the batch index of each token's parent (an earlier token of the same sequence at position - 1) or
  // kStepRoot. A sequence whose tokens are not one chain is a tree: each of its tokens sees the sequence's cached
  // cells and its own ancestors within the step, so sibling branches (which share positions) do not see each
  // other. Speculative decoding verifies a tree of drafts this way in one step.
  std::vector<int32_t> parents;
  // [n_tokens] 1 where the token is a prompt's (SequenceStep::prompt): its weight products may take the ISA's
  // prompt kernels (kernels::MatmulRows::kPrompt), the same for it in any step.
  std::vector<uint8_t> prompt;

  int32_t size() const { return static_cast<int32_t>(tokens.size()); }
  void clear() {
    tokens.clear();
    positions.clear();
    seq_ids.clear();
    outputs.clear();
    parents.clear();
    prompt.clear();
  }
  void add(int32_t token, int32_t position, kv::SeqId seq, TokenOutput output = TokenOutput::kNone,
           bool prompt_token = false) {
    tokens.push_back(token);
    positions.push_back(position);
    seq_ids.push_back(seq);
    outputs.push_back(output);
    prompt.push_back(prompt_token ? 1 : 0);
    if (!parents.empty()) parents.push_back(kStepRoot);
  }
  // As add, with the token's parent within the step (kStepRoot or an earlier batch index); turns on tree mode.
  void add_child(int32_t token, int32_t position, kv::SeqId seq, TokenOutput output, int32_t parent,
                 bool prompt_token = false) {
    if (parents.empty()) {
      // Earlier tokens form chains: each one's parent is the previous token of its sequence.
      parents.assign(tokens.size(), kStepRoot);
      for (size_t i = 0; i < tokens.size(); ++i)
        for (size_t j = i; j-- > 0;)
          if (seq_ids[j] == seq_ids[i]) {
            parents[i] = static_cast<int32_t>(j);
            break;
          }
    }
    add(token, position, seq, output, prompt_token);
    // add() extends `parents` only when it was already in use: not for the batch's first token.
    if (parents.size() < tokens.size()) {
      parents.push_back(parent);
    } else {
      parents.back() = parent;
    }
  }
  int32_t n_outputs(TokenOutput kind) const {
    int32_t n = 0;
    for (TokenOutput o : outputs) n += o == kind;
    return n;
  }
};

}  // namespace longhaul::model
