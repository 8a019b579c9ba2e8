#include "tokenizer/unicode.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <memory>

#include "base/status.h"

namespace longhaul::tokenizer {

size_t utf8_sequence_length(uint8_t lead) {
  static constexpr uint8_t kLengths[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLengths[lead >> 4];
}

std::vector<uint32_t> decode_utf8_lenient(std::string_view text) {
  std::vector<uint32_t> out;
  out.reserve(text.size());
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  auto is_cont = [&](size_t i) { return i < n && (s[i] & 0xC0) == 0x80; };
  size_t i = 0;
  while (i < n) {
    const uint8_t b0 = s[i];
    if (b0 < 0x80) {
      out.push_back(b0);
      i += 1;
    } else if ((b0 & 0x40) == 0) {  // stray continuation byte
      out.push_back(kReplacementChar);
      i += 1;
    } else if ((b0 & 0x20) == 0) {
      if (is_cont(i + 1)) {
        out.push_back(((b0 & 0x1Fu) << 6) | (s[i + 1] & 0x3Fu));
        i += 2;
      } else {
        out.push_back(kReplacementChar);
        i += 1;
      }
    } else if ((b0 & 0x10) == 0) {
      if (is_cont(i + 1) && is_cont(i + 2)) {
        out.push_back(((b0 & 0x0Fu) << 12) | ((s[i + 1] & 0x3Fu) << 6) | (s[i + 2] & 0x3Fu));
        i += 3;
      } else {
        out.push_back(kReplacementChar);
        i += 1;
      }
    } else if ((b0 & 0x08) == 0) {
      if (is_cont(i + 1) && is_cont(i + 2) && is_cont(i + 3)) {
        const uint32_t cpt =
            ((b0 & 0x07u) << 18) | ((s[i + 1] & 0x3Fu) << 12) | ((s[i + 2] & 0x3Fu) << 6) | (s[i + 3] & 0x3Fu);
        // llama.cpp aborts on these later; one replacement character is the sane reading.
        out.push_back(cpt <= 0x10FFFF ? cpt : kReplacementChar);
        i += 4;
      } else {
        out.push_back(kReplacementChar);
        i += 1;
      }
    } else {  // 0xF8..0xFF never start a sequence
      out.push_back(kReplacementChar);
      i += 1;
    }
  }
  return out;
}

void append_utf8(std::string& out, uint32_t cpt) {
  if (cpt <= 0x7F) {
    out.push_back(static_cast<char>(cpt));
  } else if (cpt <= 0x7FF) {
    out.push_back(static_cast<char>(0xC0 | (cpt >> 6)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else if (cpt <= 0xFFFF) {
    out.push_back(static_cast<char>(0xE0 | (cpt >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else {
    LH_CHECK_MSG(cpt <= 0x10FFFF, "codepoint " + std::to_string(cpt) + " above U+10FFFF");
    out.push_back(static_cast<char>(0xF0 | (cpt >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  }
}

namespace {

constexpr uint32_t kNumCodepoints = 0x110000;

// The White_Space set of Python's `regex` module, which is what the reference tokenizer's
// generated tables use for \s. PCRE2's UCP \s differs (it leaves out U+0085).
constexpr uint32_t kWhitespace[] = {0x09,   0x0A,   0x0B,   0x0C,   0x0D,   0x20,   0x85,   0xA0,   0x1680,
                                    0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008,
                                    0x2009, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000};

struct Pcre2CodeDeleter {
  void operator()(pcre2_code* p) const { pcre2_code_free(p); }
};
struct Pcre2MatchDataDeleter {
  void operator()(pcre2_match_data* p) const { pcre2_match_data_free(p); }
};

// Every codepoint belongs to exactly one general category, so matching the alternation
// below repeatedly from offset 0 walks the whole subject in runs of equal category, and
// the capture group that matched names the category of the run.
std::vector<uint8_t> build_flag_table() {
  std::vector<uint8_t> table(kNumCodepoints, 0);
  std::string subject;
  subject.reserve(4 * kNumCodepoints);
  for (uint32_t c = 0; c < kNumCodepoints; ++c) {
    if (c >= 0xD800 && c <= 0xDFFF) continue;  // surrogates cannot be encoded; they are Cs
    append_utf8(subject, c);
  }
  static constexpr char kPattern[] = R"((\p{N}+)|(\p{L}+)|(\p{Z}+)|(\p{M}+)|(\p{P}+)|(\p{S}+)|(\p{C}+))";
  static constexpr uint8_t kGroupFlag[] = {0,       kCpNumber,      kCpLetter, kCpSeparator,
                                           kCpMark, kCpPunctuation, kCpSymbol, kCpControl};
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  std::unique_ptr<pcre2_code, Pcre2CodeDeleter> code(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern),
                                                                   PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                                                                   &error_code, &error_offset, nullptr));
  LH_CHECK_MSG(code != nullptr, "PCRE2 cannot compile the Unicode category pattern");
  pcre2_jit_compile(code.get(), PCRE2_JIT_COMPLETE);  // optional speed-up; the interpreter is the fallback
  std::unique_ptr<pcre2_match_data, Pcre2MatchDataDeleter> match(
      pcre2_match_data_create_from_pattern(code.get(), nullptr));

  const auto* bytes = reinterpret_cast<PCRE2_SPTR>(subject.data());
  size_t offset = 0;
  while (offset < subject.size()) {
    const int rc = pcre2_match(code.get(), bytes, subject.size(), offset, PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK,
                               match.get(), nullptr);
    LH_CHECK_MSG(rc > 0, "PCRE2 found no general category at byte " + std::to_string(offset));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match.get());
    int group = 1;
    while (group < rc && ov[2 * group] == PCRE2_UNSET) ++group;
    const std::vector<uint32_t> run = decode_utf8_lenient(std::string_view(subject).substr(ov[0], ov[1] - ov[0]));
    for (uint32_t c : run) table[c] = kGroupFlag[group];
    offset = ov[1];
  }
  for (uint32_t c = 0xD800; c <= 0xDFFF; ++c) table[c] = kCpControl;
  for (uint32_t c : kWhitespace) table[c] |= kCpWhitespace;
  return table;
}

struct ByteMapping {
  std::array<std::string, 256> byte_to_utf8;
  std::array<int16_t, 512> cpt_to_byte;  // every mapped codepoint is below U+0144
};

ByteMapping build_byte_mapping() {
  ByteMapping m;
  m.cpt_to_byte.fill(-1);
  auto printable = [](int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); };
  int n_shifted = 0;
  for (int b = 0; b < 256; ++b) {
    const uint32_t cpt = printable(b) ? static_cast<uint32_t>(b) : 256u + n_shifted++;
    append_utf8(m.byte_to_utf8[b], cpt);
    m.cpt_to_byte[cpt] = static_cast<int16_t>(b);
  }
  return m;
}

const ByteMapping& byte_mapping() {
  static const ByteMapping m = build_byte_mapping();
  return m;
}

}  // namespace

uint8_t codepoint_flags(uint32_t cpt) {
  static const std::vector<uint8_t> table = build_flag_table();
  return cpt < kNumCodepoints ? table[cpt] : 0;
}

const std::string& byte_to_unicode(uint8_t byte) { return byte_mapping().byte_to_utf8[byte]; }

int unicode_to_byte(uint32_t cpt) { return cpt < 512 ? byte_mapping().cpt_to_byte[cpt] : -1; }

}  // namespace longhaul::tokenizer
