#include "tokenizer/tokenizer.h"

namespace longhaul::tokenizer {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Well-formed UTF-8 (Unicode Table 3-7): the sequence length a lead byte starts and the
// range its second byte must fall in; later bytes are always 80..BF. 0 = not a lead byte.
struct LeadInfo {
  int length;
  uint8_t second_lo;
  uint8_t second_hi;
};

LeadInfo lead_info(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b >= 0xC2 && b <= 0xDF) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};  // no surrogates
  if (b >= 0xE1 && b <= 0xEF) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};  // nothing above U+10FFFF
  return {0, 0, 0};
}

}  // namespace

StreamingDecoder::StreamingDecoder(const Tokenizer& tokenizer, bool render_special)
    : tokenizer_(tokenizer), render_special_(render_special) {}

std::string StreamingDecoder::push(int32_t id) { return push_bytes(tokenizer_.token_to_piece(id, render_special_)); }

std::string StreamingDecoder::push_bytes(std::string_view bytes) {
  pending_.append(bytes);
  std::string out;
  size_t i = 0;
  const size_t n = pending_.size();
  while (i < n) {
    const auto b0 = static_cast<uint8_t>(pending_[i]);
    const LeadInfo lead = lead_info(b0);
    if (lead.length == 0) {  // cannot start a character: invalid on its own
      out += kReplacement;
      ++i;
      continue;
    }
    int k = 1;
    bool bad = false;
    for (; k < lead.length && i + k < n; ++k) {
      const auto b = static_cast<uint8_t>(pending_[i + k]);
      const uint8_t lo = k == 1 ? lead.second_lo : 0x80;
      const uint8_t hi = k == 1 ? lead.second_hi : 0xBF;
      if (b < lo || b > hi) {
        bad = true;
        break;
      }
    }
    if (bad) {  // the bytes so far are one maximal ill-formed subpart; the offending byte starts afresh
      out += kReplacement;
      i += k;
      continue;
    }
    if (k < lead.length) break;  // valid so far but incomplete: wait for more bytes
    out.append(pending_, i, lead.length);
    i += lead.length;
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamingDecoder::flush() {
  std::string out = pending_.empty() ? "" : std::string(kReplacement);
  pending_.clear();
  return out;
}

}  // namespace longhaul::tokenizer
