// Prompt lookup decoding (Saxena, 2023; llama.cpp's --spec-type ngram family, llama-cpp-python's
// LlamaPromptLookupDecoding): the text a model writes often repeats its input (a quoted document, code under edit,
// names), so the tokens that followed an earlier occurrence of the text's last few tokens are a good guess of what
// comes next. No model, no training, no state: each propose() searches the request's whole text again.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "generate/speculative/draft_source.h"

namespace longhaul::generate::speculative {

class NgramSource final : public DraftSource {
 public:
  // n_min..n_max: lengths of the text's tail that are looked up, longest first (a longer match predicts better; a
  // shorter one finds something more often).
  explicit NgramSource(int32_t n_min = 1, int32_t n_max = 4);

  // Matched tails are counted up to this length for a draft's evidence class (match_length_class).
  static constexpr int32_t kMaxCountedMatch = 32;

  std::string name() const override { return "ngram"; }
  // The continuation (up to max_tokens, never past the text's end) of the latest earlier occurrence of the
  // longest tail of n_max..n_min tokens that occurs earlier; nothing when none does. Its evidence class is that of
  // the whole tail the occurrence matches (counted past n_max, up to kMaxCountedMatch): quoting text matches
  // dozens of tokens, a chance repeat one or two.
  void propose(const DraftContext& context, int32_t max_tokens, Draft& draft) override;
  // propose()'s lookup on `text`: the continuation into `tokens` (replaced), and the length of the tail it
  // matched (0: none, tokens left empty). `matched`, when given: how many tokens of the text's tail the occurrence
  // matches, up to kMaxCountedMatch (at least the returned length; 0 when none).
  int32_t lookup(std::span<const int32_t> text, int32_t max_tokens, std::vector<int32_t>& tokens,
                 int32_t* matched = nullptr) const;

 private:
  int32_t n_min_;
  int32_t n_max_;
};

// Where the latest earlier occurrence of the last n tokens of `text` starts (an index < text.size() - n), or -1.
// An occurrence may overlap the tail itself (periodic text).
int64_t find_latest_earlier(std::span<const int32_t> text, int32_t n);

}  // namespace longhaul::generate::speculative
