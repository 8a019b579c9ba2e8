// Unicode helpers the tokenizers share: a lenient UTF-8 decoder that behaves the way
// llama.cpp's does on broken input, per-codepoint category flags, and the GPT-2
// byte <-> printable-codepoint mapping used by byte-level BPE vocabularies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace longhaul::tokenizer {

inline constexpr uint32_t kReplacementChar = 0xFFFD;

// Bytes in the UTF-8 sequence a lead byte announces, judged from its top four bits only
// (continuation bytes count as 1, 0xF8..0xFF as 4). Callers clamp to the bytes left.
size_t utf8_sequence_length(uint8_t lead);

// Decodes UTF-8 into codepoints. A byte that does not start a complete sequence becomes
// U+FFFD and decoding resumes at the next byte, so a truncated 3-byte character yields
// one U+FFFD per byte. Overlong forms and surrogates are accepted as they come, like the
// reference tokenizer; sequences above U+10FFFF become U+FFFD.
std::vector<uint32_t> decode_utf8_lenient(std::string_view text);

void append_utf8(std::string& out, uint32_t cpt);

// Unicode general-category groups (one per codepoint) plus the White_Space property.
enum CodepointFlag : uint8_t {
  kCpNumber = 1 << 0,       // \p{N}
  kCpLetter = 1 << 1,       // \p{L}
  kCpSeparator = 1 << 2,    // \p{Z}
  kCpMark = 1 << 3,         // \p{M}
  kCpPunctuation = 1 << 4,  // \p{P}
  kCpSymbol = 1 << 5,       // \p{S}
  kCpControl = 1 << 6,      // \p{C}, which includes unassigned codepoints
  kCpWhitespace = 1 << 7,   // \s as Python's `regex` defines it (tab..CR, space, NEL, NBSP, U+2000.. etc.)
};
inline constexpr uint8_t kCpCategoryMask = 0x7F;

// Flags of one codepoint; 0 for values above U+10FFFF. The table behind it is built
// once per process from PCRE2's Unicode database (~1 MB, a few tens of milliseconds).
uint8_t codepoint_flags(uint32_t cpt);

// GPT-2 byte-level BPE spells every byte as a printable codepoint: printable Latin-1
// bytes map to themselves, the other 68 bytes to U+0100 upwards in byte order.
const std::string& byte_to_unicode(uint8_t byte);  // the codepoint as UTF-8
int unicode_to_byte(uint32_t cpt);                 // -1 when `cpt` spells no byte

}  // namespace longhaul::tokenizer
