// The vocabulary a Tokenizer holds: token texts, types, scores, merges, special ids and
// the attribute fixes llama.cpp applies at load time. Internal to the tokenizer module.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "gguf/gguf_file.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"

namespace longhaul::tokenizer {

// Attribute bits, numbered like llama.cpp's llama_token_attr. A token can carry several
// (an unused control token is kAttrControl | kAttrUnused).
enum AttrBit : uint16_t {
  kAttrUnknown = 1 << 0,
  kAttrUnused = 1 << 1,
  kAttrNormal = 1 << 2,
  kAttrControl = 1 << 3,
  kAttrUserDefined = 1 << 4,
  kAttrByte = 1 << 5,
};

enum class VocabKind { kBpe, kSpm };

// Hash for string keys that also accepts string_view, so lookups never allocate.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// Token text -> id, open addressing over a power-of-two slot array. A node-based hash map
// spends most of a 262K-token load allocating nodes; this needs one allocation.
class TextIndex {
 public:
  // Indexes `texts` (which must outlive the index and not change). Returns the first id
  // whose text repeats an earlier one, or -1 when all texts are distinct.
  int32_t build(const std::vector<std::string>& texts);
  int32_t find(std::string_view text) const;  // -1 when absent

 private:
  const std::vector<std::string>* texts_ = nullptr;
  std::vector<int32_t> slots_;  // [capacity] token id, or -1 for an empty slot; capacity >= 2 * n_texts
  size_t mask_ = 0;             // capacity - 1
};

// Built once by load_vocab() and never moved: `text_to_id` points at `texts`.
struct Vocab {
  Vocab() = default;
  Vocab(const Vocab&) = delete;
  Vocab& operator=(const Vocab&) = delete;

  VocabKind kind = VocabKind::kBpe;
  std::string model_name;
  std::string pre_name;
  std::optional<PreTokenizer> pre_tokenizer;  // kBpe only

  std::vector<std::string> texts;  // [n_vocab]
  std::vector<float> scores;       // [n_vocab] SentencePiece merge priority; 0 when the file has none
  std::vector<TokenAttr> types;    // [n_vocab] as stored
  std::vector<uint16_t> attrs;     // [n_vocab] AttrBit mask after the load-time fixes
  TextIndex text_to_id;            // over `texts`
  // "left right" (as GGUF spells a merge) -> rank; lower merges first.
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> merge_ranks;

  int32_t bos = -1;
  int32_t eos = -1;
  int32_t eot = -1;
  int32_t eom = -1;
  int32_t unk = -1;
  int32_t pad = -1;
  bool add_bos = false;
  bool add_eos = false;
  bool add_space_prefix = false;  // SentencePiece: a space before text that starts a fragment
  bool clean_spaces = false;      // decode: drop spaces before , . ? ! and some contractions
  bool ignore_merges = false;     // BPE: a word that is a whole token skips merging

  std::vector<int32_t> special_tokens;  // control/user-defined/unknown ids, longest text first
  // Trie over the texts of `special_tokens`; a node's `rank` is the index into special_tokens
  // of the token whose text ends there (-1 if none). Node 0 is the root.
  struct TrieNode {
    std::map<uint8_t, int32_t> children;
    int32_t rank = -1;
  };
  std::vector<TrieNode> special_trie;
  std::vector<int32_t> eog_ids;  // sorted

  int32_t n_vocab() const { return static_cast<int32_t>(texts.size()); }
  int32_t find(std::string_view text) const { return text_to_id.find(text); }
  // The SentencePiece byte-fallback token of `byte` (<0xXX>, else the byte itself); -1 if neither exists.
  int32_t byte_token(uint8_t byte) const;
};

Result<std::unique_ptr<const Vocab>> load_vocab(const gguf::GgufFile& file);

// Tokenizes one fragment of raw text (no special tokens inside) and appends the ids.
void bpe_tokenize(const Vocab& vocab, std::string_view text, std::vector<int32_t>& out);
void spm_tokenize(const Vocab& vocab, std::string_view text, std::vector<int32_t>& out);

}  // namespace longhaul::tokenizer
