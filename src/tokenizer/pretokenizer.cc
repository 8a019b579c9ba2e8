#include "tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <initializer_list>

#include "tokenizer/unicode.h"

namespace longhaul::tokenizer {
namespace {

// GPT-2's word regex and Llama 3's. Stages with exactly these patterns run through the
// hand-written matchers below, as in the reference; the patterns are kept for the record.
constexpr std::string_view kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
constexpr std::string_view kLlama3Regex =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kPoroRegex = " ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+";
// Case is approximated with lookaheads because the category collapse below keeps only \p{L}.
constexpr std::string_view kTekkenRegex =
    R"([^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kGpt4oRegex =
    R"([^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kDeepseek3Regex =
    R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kSeedCoderRegex =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kBailingRegex =
    R"('(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+)";

struct PreTokenizerSpec {
  std::initializer_list<std::string_view> names;
  std::initializer_list<std::string_view> regexes;
  PreTokenizerTraits traits;
};

// Which regexes and settings each `tokenizer.ggml.pre` value selects in the reference.
const std::initializer_list<PreTokenizerSpec> kSpecs = {
    {{"default"}, {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2Regex, R"(\p{N}+)", "[0-9][0-9][0-9]"}, {}},
    {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano"},
     {kLlama3Regex},
     {.clean_spaces = true, .ignore_merges = true, .force_add_bos = true}},
    {{"dbrx", "smaug-bpe"}, {kLlama3Regex}, {}},
    {{"glm4", "chatglm-bpe"}, {kLlama3Regex}, {.no_bos = true}},
    {{"deepseek-coder"},
     {"[\r\n]", R"(\s?\p{L}+)", R"(\s?\p{P}+)", "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+", R"(\p{N})"},
     {.clean_spaces = false}},
    {{"deepseek-v3", "hunyuan-dense", "hy_v4", "joyai-llm"},
     {R"(\p{N}{1,3})", "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+", kDeepseek3Regex},
     {.clean_spaces = false}},
    {{"falcon"}, {R"([\p{P}\$\+<=>\^~\|`]+)", kGpt2Regex, "[0-9][0-9][0-9]"}, {}},
    {{"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
      "modern-bert", "exaone4", "jina-v1-en", "jina-v2-code", "roberta-bpe", "mpt", "olmo", "jais"},
     {kGpt2Regex},
     {}},
    {{"trillion", "granite-docling"}, {kGpt2Regex}, {.clean_spaces = false}},
    // Digits are split off one by one before the GPT-2 regex runs.
    {{"starcoder", "refact", "codeshell", "exaone", "minerva-7b", "mellum2"}, {R"(\p{N})", kGpt2Regex}, {}},
    {{"smollm", "command-r"}, {R"(\p{N})", kGpt2Regex}, {.clean_spaces = false}},
    {{"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan", "solar-open", "grok-2"},
     {kQwen2Regex},
     {.clean_spaces = false}},
    {{"stablelm2", "megrez"}, {kQwen2Regex}, {}},
    {{"poro-chat"}, {kPoroRegex}, {.clean_spaces = false}},
    {{"bloom", "gpt3-finnish"}, {kPoroRegex}, {}},
    {{"viking"}, {kPoroRegex, R"(\p{N})"}, {.clean_spaces = false}},
    {{"tekken"}, {kTekkenRegex}, {.clean_spaces = false, .ignore_merges = true, .force_add_bos = true}},
    {{"gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"}, {kGpt4oRegex}, {.clean_spaces = false}},
    {{"seed-coder"}, {kSeedCoderRegex}, {.clean_spaces = false}},
    {{"bailingmoe", "bailingmoe2", "llada-moe"}, {kBailingRegex}, {.clean_spaces = false}},
};

constexpr uint32_t kOutOfRange = 0xFFFFFFFF;

// One chunk [ini, end) of the codepoint array, with the reference's view of the world
// outside it: codepoint kOutOfRange and no flags.
struct Chunk {
  const std::vector<uint32_t>& cpts;
  size_t ini;
  size_t end;
  uint32_t cpt(size_t pos) const { return pos >= ini && pos < end ? cpts[pos] : kOutOfRange; }
  uint8_t flags(size_t pos) const { return pos >= ini && pos < end ? codepoint_flags(cpts[pos]) : 0; }
};

// Appends the piece from the previous cut to `to` (if not empty) and moves the cut.
struct Cutter {
  std::vector<size_t>& out;
  size_t prev;
  size_t cut(size_t to) {
    const size_t len = to - prev;
    if (len > 0) out.push_back(len);
    prev = to;
    return len;
  }
};

bool is_rn(uint32_t c) { return c == '\r' || c == '\n'; }
uint32_t ascii_lower(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

// Length (2 or 3) of an English contraction starting at `pos` ('s 't 'm 'd 're 've 'll), else 0.
size_t contraction_length(const Chunk& ch, size_t pos, bool ignore_case) {
  if (ch.cpt(pos) != '\'' || pos + 1 >= ch.end) return 0;
  auto lower = [&](uint32_t c) { return ignore_case ? ascii_lower(c) : c; };
  const uint32_t c1 = lower(ch.cpt(pos + 1));
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
  if (pos + 2 >= ch.end) return 0;
  const uint32_t c2 = lower(ch.cpt(pos + 2));
  if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
  return 0;
}

constexpr uint8_t kLetterNumberSpace = kCpLetter | kCpNumber | kCpWhitespace;

// Hand-written equivalent of kGpt2Regex over one chunk.
void split_gpt2(const Chunk& ch, std::vector<size_t>& out) {
  Cutter cutter{out, ch.ini};
  size_t pos = ch.ini;
  while (pos < ch.end) {
    const uint32_t c = ch.cpt(pos);
    if (const size_t n = contraction_length(ch, pos, /*ignore_case=*/false); n > 0) {
      pos += cutter.cut(pos + n);
      continue;
    }
    const uint8_t f2 = c == ' ' ? ch.flags(pos + 1) : ch.flags(pos);
    if (f2 & (kCpLetter | kCpNumber)) {  // " ?\p{L}+" and " ?\p{N}+"
      const uint8_t cls = (f2 & kCpLetter) ? kCpLetter : kCpNumber;
      pos += c == ' ';
      while (ch.flags(pos) & cls) ++pos;
      cutter.cut(pos);
      continue;
    }
    if (!(f2 & kLetterNumberSpace) && f2 != 0) {  // " ?[^\s\p{L}\p{N}]+"
      pos += c == ' ';
      while (!(ch.flags(pos) & kLetterNumberSpace) && ch.flags(pos) != 0) ++pos;
      cutter.cut(pos);
      continue;
    }
    size_t n_ws = 0;
    while (ch.flags(pos + n_ws) & kCpWhitespace) ++n_ws;
    if (n_ws > 1 && pos + n_ws < ch.end) {  // "\s+(?!\S)": leave the last space to the next word
      pos += n_ws - 1;
      cutter.cut(pos);
      continue;
    }
    if (n_ws > 0) {
      pos += n_ws;
      cutter.cut(pos);
      continue;
    }
    cutter.cut(++pos);
  }
}

// Hand-written equivalent of kLlama3Regex over one chunk.
void split_llama3(const Chunk& ch, std::vector<size_t>& out) {
  Cutter cutter{out, ch.ini};
  size_t pos = ch.ini;
  while (pos < ch.end) {
    const uint32_t c = ch.cpt(pos);
    const uint8_t f = ch.flags(pos);
    if (const size_t n = contraction_length(ch, pos, /*ignore_case=*/true); n > 0) {
      pos += cutter.cut(pos + n);
      continue;
    }
    if (!is_rn(c) && !(f & kCpNumber) && ((f & kCpLetter) || (ch.flags(pos + 1) & kCpLetter))) {
      ++pos;  // "[^\r\n\p{L}\p{N}]?\p{L}+": the first codepoint is either the prefix or a letter
      while (ch.flags(pos) & kCpLetter) ++pos;
      cutter.cut(pos);
      continue;
    }
    if (f & kCpNumber) {  // "\p{N}{1,3}"
      size_t ini = pos;
      while (ch.flags(pos) & kCpNumber) {
        if (++pos - ini >= 3) {
          cutter.cut(pos);
          ini = pos;
        }
      }
      cutter.cut(pos);
      continue;
    }
    // " ?[^\s\p{L}\p{N}]+[\r\n]*". The reference tests the first codepoint's flags, not the
    // second's, for "defined", so a lone trailing space takes this branch; kept as is.
    const uint8_t f2 = c == ' ' ? ch.flags(pos + 1) : f;
    if (!(f2 & kLetterNumberSpace) && f != 0) {
      pos += c == ' ';
      while (!(ch.flags(pos) & kLetterNumberSpace) && ch.flags(pos) != 0) ++pos;
      while (is_rn(ch.cpt(pos))) ++pos;
      cutter.cut(pos);
      continue;
    }
    size_t n_ws = 0;
    size_t last_rn_end = 0;
    while (ch.flags(pos + n_ws) & kCpWhitespace) {
      if (is_rn(ch.cpt(pos + n_ws))) last_rn_end = pos + n_ws + 1;
      ++n_ws;
    }
    if (last_rn_end > 0) {  // "\s*[\r\n]+"
      pos = last_rn_end;
      cutter.cut(pos);
      continue;
    }
    if (n_ws > 1 && pos + n_ws < ch.end) {  // "\s+(?!\S)"
      pos += n_ws - 1;
      cutter.cut(pos);
      continue;
    }
    if (n_ws > 0) {
      pos += n_ws;
      cutter.cut(pos);
      continue;
    }
    cutter.cut(++pos);
  }
}

// Category placeholders of the collapsed text (one byte per codepoint).
constexpr char kCollapsedOther = '\xD0';
constexpr char kCollapsedNumber = '\xD1';
constexpr char kCollapsedLetter = '\xD2';
constexpr char kCollapsedPunctuation = '\xD3';
constexpr char kCollapsedMark = '\xD4';
constexpr char kCollapsedSymbol = '\xD5';

struct CategoryClass {
  std::string_view name;
  char placeholder;
  std::string_view ascii_members;  // the ASCII codepoints of the category, as class members
};
// \p{Lu} etc. all collapse to "letter": the collapsed text cannot tell case apart. ASCII
// characters stay themselves, so what they match is decided by the ASCII members listed
// here, which are the reference's lists (llama.cpp as shipped in llama-cpp-python 0.3.36,
// which counts '~' as a symbol), not Unicode's.
constexpr std::array<CategoryClass, 10> kCategoryClasses = {{
    {R"(\p{N})", kCollapsedNumber, "0-9"},
    {R"(\p{L})", kCollapsedLetter, "A-Za-z"},
    {R"(\p{P})", kCollapsedPunctuation, R"(!-#%-*,-/:-;?-@\[-\]_\{\})"},
    {R"(\p{M})", kCollapsedMark, ""},
    {R"(\p{S})", kCollapsedSymbol, R"(\$\+<->^`\|\~)"},
    {R"(\p{Lu})", kCollapsedLetter, "A-Za-z"},
    {R"(\p{Ll})", kCollapsedLetter, "A-Za-z"},
    {R"(\p{Lt})", kCollapsedLetter, "A-Za-z"},
    {R"(\p{Lm})", kCollapsedLetter, "A-Za-z"},
    {R"(\p{Lo})", kCollapsedLetter, "A-Za-z"},
}};

bool uses_categories(std::string_view regex) {
  for (const CategoryClass& c : kCategoryClasses)
    if (regex.find(c.name) != std::string_view::npos) return true;
  return false;
}

// Rewrites each \p{..} into a class of its placeholder byte plus its ASCII members.
Result<std::string> collapse_regex(std::string_view regex) {
  for (char c : regex)
    if (static_cast<unsigned char>(c) >= 0x80)
      return Status::error("regex '" + std::string(regex) + "' mixes Unicode categories and non-ASCII characters");
  std::string out;
  bool inside_class = false;
  for (size_t i = 0; i < regex.size(); ++i) {
    if (regex[i] == '[' && (i == 0 || regex[i - 1] != '\\')) {
      out += '[';
      inside_class = true;
      continue;
    }
    if (inside_class && regex[i] == ']' && regex[i - 1] != '\\') {
      out += ']';
      inside_class = false;
      continue;
    }
    bool replaced = false;
    for (const CategoryClass& c : kCategoryClasses) {
      if (regex.substr(i, c.name.size()) != c.name) continue;
      if (!inside_class) out += '[';
      out += c.placeholder;
      out += c.ascii_members;
      if (!inside_class) out += ']';
      i += c.name.size() - 1;
      replaced = true;
      break;
    }
    if (!replaced) out += regex[i];
  }
  return out;
}

char collapse_codepoint(uint32_t cpt) {
  if (cpt < 128) return static_cast<char>(cpt);
  const uint8_t f = codepoint_flags(cpt);
  if (f & kCpWhitespace) return '\x0B';  // any non-ASCII space reads as a vertical tab, which \s matches
  switch (f & kCpCategoryMask) {
    case kCpNumber: return kCollapsedNumber;
    case kCpLetter: return kCollapsedLetter;
    case kCpPunctuation: return kCollapsedPunctuation;
    case kCpMark: return kCollapsedMark;
    case kCpSymbol: return kCollapsedSymbol;
    default: return kCollapsedOther;
  }
}

struct Pcre2CodeDeleter {
  void operator()(pcre2_code* p) const { pcre2_code_free(p); }
};
struct Pcre2MatchDataDeleter {
  void operator()(pcre2_match_data* p) const { pcre2_match_data_free(p); }
};

}  // namespace

struct PreTokenizer::Stage {
  enum class Kind { kGpt2, kLlama3, kCollapsed, kWide };
  Kind kind = Kind::kGpt2;
  std::unique_ptr<pcre2_code, Pcre2CodeDeleter> code;  // kCollapsed, kWide

  // Cuts every piece of `lengths` (codepoint counts summing to cpts.size()) further.
  std::vector<size_t> split(const std::vector<uint32_t>& cpts, const std::string& collapsed,
                            const std::vector<size_t>& lengths) const {
    std::vector<size_t> out;
    out.reserve(lengths.size());
    size_t start = 0;
    for (size_t len : lengths) {
      const Chunk chunk{cpts, start, start + len};
      switch (kind) {
        case Kind::kGpt2: split_gpt2(chunk, out); break;
        case Kind::kLlama3: split_llama3(chunk, out); break;
        case Kind::kCollapsed: split_regex(std::string_view(collapsed).substr(start, len), nullptr, out); break;
        case Kind::kWide: split_wide(chunk, out); break;
      }
      start += len;
    }
    return out;
  }

  // Codepoints as UTF-8 with non-ASCII spaces read as vertical tabs (PCRE2's \s without UCP
  // is ASCII-only) and surrogates, which PCRE2 cannot take, as U+FFFD.
  void split_wide(const Chunk& ch, std::vector<size_t>& out) const {
    std::string subject;
    std::vector<size_t> cpt_index;  // [subject bytes + 1] codepoint index of each byte offset
    for (size_t i = ch.ini; i < ch.end; ++i) {
      uint32_t c = ch.cpts[i];
      if (c >= 0x80 && (codepoint_flags(c) & kCpWhitespace)) c = 0x0B;
      if (c >= 0xD800 && c <= 0xDFFF) c = kReplacementChar;
      append_utf8(subject, c);
      cpt_index.resize(subject.size(), i - ch.ini);
    }
    cpt_index.push_back(ch.end - ch.ini);
    split_regex(subject, &cpt_index, out);
  }

  // Matched and unmatched stretches both become pieces, as std::regex_iterator walking gives them.
  void split_regex(std::string_view subject, const std::vector<size_t>* cpt_index, std::vector<size_t>& out) const {
    std::unique_ptr<pcre2_match_data, Pcre2MatchDataDeleter> md(
        pcre2_match_data_create_from_pattern(code.get(), nullptr));
    auto to_cpt = [&](size_t byte) { return cpt_index != nullptr ? (*cpt_index)[byte] : byte; };
    const auto* s = reinterpret_cast<PCRE2_SPTR>(subject.data());
    size_t last_end = 0;
    size_t search_from = 0;
    while (search_from <= subject.size()) {
      const int rc = pcre2_match(code.get(), s, subject.size(), search_from, 0, md.get(), nullptr);
      if (rc < 0) break;  // PCRE2_ERROR_NOMATCH, or a resource limit: the rest stays one piece
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
      const size_t m0 = ov[0];
      const size_t m1 = ov[1];
      if (to_cpt(m0) > to_cpt(last_end)) out.push_back(to_cpt(m0) - to_cpt(last_end));
      if (m1 > m0) out.push_back(to_cpt(m1) - to_cpt(m0));
      last_end = m1;
      if (m1 > m0) {
        search_from = m1;
      } else {  // an empty match: step over one character
        if (m0 >= subject.size()) break;
        search_from = m0 + 1;
        while (cpt_index != nullptr && search_from < subject.size() &&
               (static_cast<uint8_t>(subject[search_from]) & 0xC0) == 0x80)
          ++search_from;
      }
    }
    if (last_end < subject.size()) out.push_back(to_cpt(subject.size()) - to_cpt(last_end));
  }
};

PreTokenizer::PreTokenizer(PreTokenizer&&) noexcept = default;
PreTokenizer& PreTokenizer::operator=(PreTokenizer&&) noexcept = default;
PreTokenizer::~PreTokenizer() = default;

Result<PreTokenizer> PreTokenizer::create(std::string_view pre_name) {
  const PreTokenizerSpec* spec = nullptr;
  for (const PreTokenizerSpec& s : kSpecs)
    for (std::string_view name : s.names)
      if (name == pre_name) spec = &s;
  if (spec == nullptr)
    return Status::error("unknown pre-tokenizer tokenizer.ggml.pre = '" + std::string(pre_name) +
                         "' (longhaul knows default, gpt-2, smollm, starcoder, llama3, llama-bpe, qwen2, tekken, "
                         "gpt-4o and their aliases)");
  PreTokenizer pre;
  pre.traits_ = spec->traits;
  for (std::string_view regex : spec->regexes) {
    auto stage = std::make_unique<Stage>();
    if (regex == kGpt2Regex) {
      stage->kind = Stage::Kind::kGpt2;
    } else if (regex == kLlama3Regex) {
      stage->kind = Stage::Kind::kLlama3;
    } else {
      std::string pattern;
      uint32_t options = PCRE2_DOLLAR_ENDONLY;  // ECMAScript's $ does not match before a final newline
      if (uses_categories(regex)) {
        stage->kind = Stage::Kind::kCollapsed;
        LH_ASSIGN_OR_RETURN(pattern, collapse_regex(regex));
      } else {
        stage->kind = Stage::Kind::kWide;
        pattern = std::string(regex);
        options |= PCRE2_UTF;
      }
      int error_code = 0;
      PCRE2_SIZE error_offset = 0;
      stage->code.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options,
                                      &error_code, &error_offset, nullptr));
      if (stage->code == nullptr) {
        std::array<PCRE2_UCHAR, 256> message{};
        pcre2_get_error_message(error_code, message.data(), message.size());
        return Status::error("pre-tokenizer '" + std::string(pre_name) + "': PCRE2 rejects regex '" +
                             std::string(regex) + "' at offset " + std::to_string(error_offset) + ": " +
                             reinterpret_cast<const char*>(message.data()));
      }
      pcre2_jit_compile(stage->code.get(), PCRE2_JIT_COMPLETE);  // optional speed-up
    }
    pre.stages_.push_back(std::move(stage));
  }
  return pre;
}

std::vector<std::string> PreTokenizer::split(std::string_view text) const {
  const std::vector<uint32_t> cpts = decode_utf8_lenient(text);
  if (cpts.empty()) return {};
  std::string collapsed;
  for (const auto& stage : stages_) {
    if (stage->kind == Stage::Kind::kCollapsed) {
      collapsed.resize(cpts.size());
      for (size_t i = 0; i < cpts.size(); ++i) collapsed[i] = collapse_codepoint(cpts[i]);
      break;
    }
  }
  std::vector<size_t> lengths = {cpts.size()};
  for (const auto& stage : stages_) lengths = stage->split(cpts, collapsed, lengths);

  std::vector<std::string> words;
  words.reserve(lengths.size());
  std::string utf8;
  size_t start = 0;
  for (size_t len : lengths) {
    utf8.clear();
    for (size_t i = start; i < start + len; ++i) append_utf8(utf8, cpts[i]);
    std::string word;
    word.reserve(utf8.size() * 2);
    for (char b : utf8) word += byte_to_unicode(static_cast<uint8_t>(b));
    words.push_back(std::move(word));
    start += len;
  }
  return words;
}

}  // namespace longhaul::tokenizer
