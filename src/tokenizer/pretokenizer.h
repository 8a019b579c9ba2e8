// Pre-tokenizer for byte-level BPE vocabularies: splits text into words with the regex
// list that `tokenizer.ggml.pre` names, then spells each word in the GPT-2 byte alphabet.
//
// The reference (llama.cpp) applies the regexes one after the other, each one splitting the
// pieces the previous one left (matched and unmatched stretches alike). It runs the two most
// common regexes (GPT-2's and Llama 3's) through hand-written matchers and every other one
// through std::regex over a "collapsed" text where each non-ASCII codepoint is replaced by
// one byte standing for its Unicode category. We do the same with PCRE2 so that word
// boundaries agree with it codepoint for codepoint.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace longhaul::tokenizer {

// Settings that the reference derives from the pre-tokenizer name.
struct PreTokenizerTraits {
  bool clean_spaces = true;    // decode removes " ," " ." " 's" ... (clean_up_tokenization_spaces); false = keep
  bool ignore_merges = false;  // a word that is a whole vocabulary entry skips the merge loop; false = always merge
  bool force_add_bos = false;  // the name implies BOS is added (the GGUF key can still override); false = no opinion
  bool no_bos = false;         // the name implies the vocabulary has no BOS token; false = no opinion
};

class PreTokenizer {
 public:
  // Errors name the pre-tokenizer when longhaul does not know it.
  static Result<PreTokenizer> create(std::string_view pre_name);

  PreTokenizer(PreTokenizer&&) noexcept;
  PreTokenizer& operator=(PreTokenizer&&) noexcept;
  ~PreTokenizer();

  // Words of `text` (raw UTF-8, possibly invalid: bad bytes become U+FFFD first), each spelled
  // in the byte alphabet. Thread-safe: const and uses no shared mutable state.
  std::vector<std::string> split(std::string_view text) const;

  const PreTokenizerTraits& traits() const { return traits_; }

  struct Stage;  // one regex of the list

 private:
  PreTokenizer() = default;
  std::vector<std::unique_ptr<Stage>> stages_;
  PreTokenizerTraits traits_;
};

}  // namespace longhaul::tokenizer
