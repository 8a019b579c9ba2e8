#include "tokenizer/tokenizer.h"

#include <algorithm>

#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"

namespace longhaul::tokenizer {
namespace {

// A stretch of the input: raw text still to tokenize, or one special token already found.
struct Fragment {
  int32_t token;  // -1 for raw text
  size_t offset;  // raw text only: [offset, offset + length) of the input
  size_t length;
};

// Ranks (indices into v.special_tokens) of the special tokens whose text occurs anywhere in
// `text`, ascending. One walk of the trie from every position; it keeps the partition below
// from searching a long text once for each of a large vocabulary's thousands of special tokens.
std::vector<int32_t> special_tokens_present(const Vocab& v, std::string_view text) {
  std::vector<int32_t> ranks;
  for (size_t start = 0; start < text.size(); ++start) {
    int32_t node = 0;
    for (size_t i = start; i < text.size(); ++i) {
      const auto& children = v.special_trie[node].children;
      const auto it = children.find(static_cast<uint8_t>(text[i]));
      if (it == children.end()) break;
      node = it->second;
      if (v.special_trie[node].rank >= 0) ranks.push_back(v.special_trie[node].rank);
    }
  }
  std::sort(ranks.begin(), ranks.end());
  ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
  return ranks;
}

// Splits special-token texts out of `text`. Like the reference, each special token in turn
// (longest text first) cuts every raw fragment at all of its occurrences, so a longer token
// wins over a shorter one anywhere in the text, not just where both start at one position.
std::vector<Fragment> split_special(const Vocab& v, std::string_view text, bool parse_special) {
  std::vector<Fragment> fragments;
  if (text.empty()) return fragments;
  fragments.push_back({-1, 0, text.size()});
  std::vector<Fragment> next;
  for (const int32_t rank : special_tokens_present(v, text)) {
    const int32_t id = v.special_tokens[rank];
    // Without parse_special only user-defined tokens are recognized.
    if (!parse_special && (v.attrs[id] & (kAttrControl | kAttrUnknown))) continue;
    const std::string& special = v.texts[id];
    next.clear();
    for (const Fragment& f : fragments) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      const std::string_view window = text.substr(0, f.offset + f.length);
      size_t pos = f.offset;
      while (pos < window.size()) {
        const size_t match = window.find(special, pos);
        if (match == std::string_view::npos) break;
        if (match > pos) next.push_back({-1, pos, match - pos});
        next.push_back({id, 0, 0});
        pos = match + special.size();
      }
      if (pos < window.size()) next.push_back({-1, pos, window.size() - pos});
    }
    fragments.swap(next);
  }
  return fragments;
}

void escape_spaces(std::string& text) {
  std::string out;
  out.reserve(text.size() + text.size() / 2);
  for (char c : text) {
    if (c == ' ') {
      out += "\xE2\x96\x81";  // U+2581, SentencePiece's visible space
    } else {
      out += c;
    }
  }
  text.swap(out);
}

std::string unescape_spaces(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text.compare(i, 3, "\xE2\x96\x81") == 0) {
      out += ' ';
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

// Byte-level spelling back to bytes. A codepoint outside the byte alphabet cannot come from a
// well-formed vocabulary; the reference writes a marker for it, and so do we.
std::string decode_byte_level(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (uint32_t cpt : decode_utf8_lenient(text)) {
    const int byte = unicode_to_byte(cpt);
    if (byte >= 0) {
      out += static_cast<char>(byte);
      continue;
    }
    static constexpr char kHex[] = "0123456789abcdef";
    std::string utf8;
    append_utf8(utf8, cpt);
    out += "[UNK_BYTE_0x";
    for (char c : utf8) {
      out += kHex[static_cast<uint8_t>(c) >> 4];
      out += kHex[static_cast<uint8_t>(c) & 15];
    }
    out += text;
    out += ']';
  }
  return out;
}

// clean_up_tokenization_spaces as the reference applies it: " ?" " !" " ." " ," lose the
// space, " ' " loses both spaces, and " 's" " 'm" " 're" " 've" lose the space.
std::string clean_spaces(const std::string& in) {
  std::string a;
  for (size_t i = 0; i < in.size(); ++i) {
    const char x = in[i];
    if (i > 0 && in[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) a.pop_back();
    a += x;
  }
  std::string b;
  for (size_t i = 0; i < a.size(); ++i) {
    const char x = a[i];
    if (x == '\'' && i > 0 && i + 1 < a.size() && a[i - 1] == ' ' && a[i + 1] == ' ') {
      b.pop_back();
      b += x;
      a[i + 1] = '\0';  // the reference blanks the dropped space, so " ' ' " only loses one pair
      ++i;
      continue;
    }
    b += x;
  }
  std::string c;
  for (size_t i = 0; i < b.size(); ++i) {
    const char x = b[i];
    if (x == '\'' && i > 0 && b[i - 1] == ' ' && i + 1 < b.size()) {
      const char x1 = b[i + 1];
      const char x2 = i + 2 < b.size() ? b[i + 2] : '\0';
      if (x1 == 's' || x1 == 'm' || (x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) c.pop_back();
    }
    c += x;
  }
  return c;
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<const Vocab> vocab) : vocab_(std::move(vocab)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Result<Tokenizer> Tokenizer::from_gguf(const gguf::GgufFile& file) {
  LH_ASSIGN_OR_RETURN(std::unique_ptr<const Vocab> vocab, load_vocab(file));
  return Tokenizer(std::move(vocab));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special, bool parse_special) const {
  const TextSegment segment{text, parse_special};
  return encode(std::span<const TextSegment>(&segment, 1), add_special);
}

std::vector<int32_t> Tokenizer::encode(std::span<const TextSegment> segments, bool add_special) const {
  const Vocab& v = *vocab_;
  // One string for the whole input, fragments indexing into it; each segment is split on its own.
  std::string text;
  std::vector<Fragment> fragments;
  for (const TextSegment& segment : segments) {
    const size_t base = text.size();
    text += segment.text;
    for (Fragment f : split_special(v, segment.text, segment.parse_special)) {
      if (f.token < 0) {
        f.offset += base;
        if (!fragments.empty() && fragments.back().token < 0 &&
            fragments.back().offset + fragments.back().length == f.offset) {
          fragments.back().length += f.length;  // raw text continues across the segment boundary
          continue;
        }
      }
      fragments.push_back(f);
    }
  }
  std::vector<int32_t> out;
  if (add_special && v.add_bos) out.push_back(v.bos);
  bool prev_special = true;  // SentencePiece: a space prefix goes before text that opens a fragment
  for (const Fragment& f : fragments) {
    if (f.token >= 0) {
      out.push_back(f.token);
      prev_special = true;
      continue;
    }
    const std::string_view piece = std::string_view(text).substr(f.offset, f.length);
    if (v.kind == VocabKind::kBpe) {
      bpe_tokenize(v, piece, out);
    } else {
      std::string escaped = (v.add_space_prefix && prev_special) ? " " : "";
      escaped += piece;
      escape_spaces(escaped);
      spm_tokenize(v, escaped, out);
    }
    prev_special = false;
  }
  if (add_special && v.add_eos) out.push_back(v.eos);
  return out;
}

std::string Tokenizer::token_to_piece(int32_t id, bool render_special) const {
  const Vocab& v = *vocab_;
  LH_CHECK_MSG(id >= 0 && id < v.n_vocab(),
               "token id " + std::to_string(id) + " outside the vocabulary [0, " + std::to_string(v.n_vocab()) + ")");
  const uint16_t attr = v.attrs[id];
  const std::string& text = v.texts[id];
  if (!render_special && (attr & (kAttrUnknown | kAttrControl))) return {};
  if (attr & (kAttrUnknown | kAttrControl | kAttrUserDefined)) return text;
  if (attr & kAttrNormal) return v.kind == VocabKind::kBpe ? decode_byte_level(text) : unescape_spaces(text);
  if (attr & kAttrByte) {
    // "<0xXX>"
    if (text.size() == 6) return std::string(1, static_cast<char>(std::stoi(text.substr(3, 2), nullptr, 16)));
    return {};
  }
  return {};  // unused tokens render as nothing
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool render_special) const {
  const Vocab& v = *vocab_;
  std::string out;
  bool strip_space = v.add_space_prefix;  // the space encode() put before the text
  for (int32_t id : ids) {
    std::string piece = token_to_piece(id, render_special);
    if (strip_space && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
    strip_space = false;
    out += piece;
  }
  return v.clean_spaces ? clean_spaces(out) : out;
}

int32_t Tokenizer::n_vocab() const { return vocab_->n_vocab(); }
int32_t Tokenizer::bos_id() const { return vocab_->bos; }
int32_t Tokenizer::eos_id() const { return vocab_->eos; }
int32_t Tokenizer::eot_id() const { return vocab_->eot; }
bool Tokenizer::add_bos() const { return vocab_->add_bos; }
bool Tokenizer::add_eos() const { return vocab_->add_eos; }

bool Tokenizer::is_end_of_generation(int32_t id) const {
  return std::binary_search(vocab_->eog_ids.begin(), vocab_->eog_ids.end(), id);
}

std::optional<int32_t> Tokenizer::find_token(std::string_view text) const {
  const int32_t id = vocab_->find(text);
  return id >= 0 ? std::optional<int32_t>(id) : std::nullopt;
}

const std::string& Tokenizer::token_text(int32_t id) const {
  LH_CHECK(id >= 0 && id < vocab_->n_vocab());
  return vocab_->texts[id];
}

TokenAttr Tokenizer::token_attr(int32_t id) const {
  LH_CHECK(id >= 0 && id < vocab_->n_vocab());
  return vocab_->types[id];
}

bool Tokenizer::is_control(int32_t id) const {
  LH_CHECK(id >= 0 && id < vocab_->n_vocab());
  return (vocab_->attrs[id] & kAttrControl) != 0;
}

const std::string& Tokenizer::model_name() const { return vocab_->model_name; }
const std::string& Tokenizer::pre_name() const { return vocab_->pre_name; }

}  // namespace longhaul::tokenizer
