// Tokenizer built from a GGUF file's `tokenizer.ggml.*` metadata. Encodes text to the same
// ids llama.cpp's llama_tokenize gives and decodes ids the way llama_token_to_piece /
// llama_detokenize do. Two algorithms:
//   - byte-level BPE (tokenizer.ggml.model = "gpt2"): regex pre-tokenizer chosen by
//     tokenizer.ggml.pre, bytes spelled as printable codepoints, merges applied by rank;
//   - SentencePiece BPE (tokenizer.ggml.model = "llama"): spaces become U+2581, adjacent
//     pieces merge by highest score, pieces missing from the vocabulary fall back to <0xXX>.
// Control and user-defined tokens are split out of the text before either runs.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "gguf/gguf_file.h"

namespace longhaul::tokenizer {

// Token type as GGUF stores it in tokenizer.ggml.token_type.
enum class TokenAttr : uint8_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct Vocab;

// A piece of a text to encode, and whether control-token texts in it become control tokens.
struct TextSegment {
  std::string_view text;
  bool parse_special = false;
};

// Immutable after from_gguf(); every const method is safe to call from several threads.
// Move-only: the vocabulary of a large model is tens of megabytes.
class Tokenizer {
 public:
  // Errors: unknown tokenizer.ggml.model or tokenizer.ggml.pre, missing tokens or merges,
  // scores/token_type arrays shorter than the vocabulary, token types outside 1..6,
  // duplicate token texts, special-token ids outside the vocabulary, add_bos without a BOS id.
  static Result<Tokenizer> from_gguf(const gguf::GgufFile& file);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // add_special: prepend BOS / append EOS as tokenizer.ggml.add_bos_token / add_eos_token say.
  // parse_special: the texts of control tokens inside `text` become those tokens; leave it off
  // for user text, where "<|im_end|>" is plain text. User-defined tokens are matched either way,
  // as llama.cpp does (it follows Hugging Face's added-token handling).
  std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const;
  // The ids of the segments' concatenation, where control-token texts are recognized only inside segments that
  // parse_special (and never across a segment boundary): a chat template's markers are control tokens, the messages
  // between them user text. Raw text of adjacent segments is tokenized as one piece, so when no message holds
  // control-token text the ids are those of encode(concatenation, add_special, true), as the reference gives them.
  std::vector<int32_t> encode(std::span<const TextSegment> segments, bool add_special) const;

  // Raw bytes of one token; may be a partial UTF-8 sequence (byte tokens, byte-level BPE).
  // Control and unknown tokens render as "" unless render_special. `id` must be in [0, n_vocab).
  std::string token_to_piece(int32_t id, bool render_special = false) const;
  // Concatenated pieces, with the reference's decode-time clean-ups for this vocabulary
  // (leading-space removal when a space prefix was added, clean_up_tokenization_spaces).
  std::string decode(std::span<const int32_t> ids, bool render_special = false) const;

  int32_t n_vocab() const;
  int32_t bos_id() const;  // -1 when the vocabulary has none
  int32_t eos_id() const;  // -1 when the vocabulary has none
  int32_t eot_id() const;  // end of turn (<|im_end|>, <end_of_turn>, ...), -1 when none was found
  bool add_bos() const;
  bool add_eos() const;
  // The reference's end-of-generation set: EOS, EOT, and tokens whose text marks the end
  // of a turn or document (<|im_end|>, <end_of_turn>, <|endoftext|>, ...).
  bool is_end_of_generation(int32_t id) const;
  std::optional<int32_t> find_token(std::string_view text) const;
  const std::string& token_text(int32_t id) const;  // as stored in GGUF (byte-alphabet or U+2581 spelling)
  TokenAttr token_attr(int32_t id) const;           // as stored in GGUF
  bool is_control(int32_t id) const;                // control after load-time fixes (EOG texts are forced to control)
  const std::string& model_name() const;            // tokenizer.ggml.model: "gpt2" / "llama"
  const std::string& pre_name() const;              // tokenizer.ggml.pre, "default" when absent

 private:
  explicit Tokenizer(std::unique_ptr<const Vocab> vocab);
  std::unique_ptr<const Vocab> vocab_;
};

// Assembles UTF-8 across token boundaries for streaming output: push() returns only complete
// characters; an invalid sequence becomes U+FFFD as soon as it is known to be invalid (one
// U+FFFD per maximal ill-formed subpart, as Unicode recommends); flush() returns the rest,
// an incomplete tail as U+FFFD. Holds a reference to the tokenizer, which must outlive it.
class StreamingDecoder {
 public:
  explicit StreamingDecoder(const Tokenizer& tokenizer, bool render_special = false);
  std::string push(int32_t id);
  // Feeds raw bytes instead of a token; what push() does after looking up the piece.
  std::string push_bytes(std::string_view bytes);
  std::string flush();

 private:
  const Tokenizer& tokenizer_;
  bool render_special_;
  std::string pending_;  // bytes of an incomplete but so far valid character (at most 3)
};

}  // namespace longhaul::tokenizer

// Chat formatting lives beside the tokenizer; most callers want both.
#include "tokenizer/chat_format.h"  // IWYU pragma: export
