#include "kv/head_profile.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "base/mapped_file.h"

namespace longhaul::kv {
namespace {

constexpr std::string_view kMagic = "longhaul-head-profile";

// Splits a line at spaces and tabs.
std::vector<std::string_view> fields(std::string_view line) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
    const size_t b = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t' && line[i] != '\r') ++i;
    if (i > b) out.push_back(line.substr(b, i - b));
  }
  return out;
}

// A whole field as an integer in [lo, hi].
bool parse_int(std::string_view s, int64_t lo, int64_t hi, int64_t& out) {
  if (s.empty() || s.size() > 20) return false;
  const std::string z(s);
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(z.c_str(), &end, 10);
  if (errno != 0 || end != z.c_str() + z.size() || v < lo || v > hi) return false;
  out = v;
  return true;
}

// A whole field as a finite float >= 0.
bool parse_mass(std::string_view s, float& out) {
  if (s.empty() || s.size() > 64) return false;
  const std::string z(s);
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(z.c_str(), &end);
  if (errno != 0 || end != z.c_str() + z.size() || !std::isfinite(v) || v < 0 || v > 1e6) return false;
  out = static_cast<float>(v);
  return true;
}

Status line_error(int64_t line_no, const std::string& what) {
  return Status::error("head profile line " + std::to_string(line_no) + ": " + what);
}

// "attn.L" or "ffn.L" with L in [0, n_layer).
bool parse_sublayer(std::string_view s, int32_t n_layer, Sublayer& out) {
  const size_t dot = s.find('.');
  if (dot == std::string_view::npos) return false;
  const std::string_view kind = s.substr(0, dot);
  int64_t il = 0;
  if (!parse_int(s.substr(dot + 1), 0, n_layer - 1, il)) return false;
  if (kind == "attn") {
    out.kind = SublayerKind::kAttention;
  } else if (kind == "ffn") {
    out.kind = SublayerKind::kFeedForward;
  } else {
    return false;
  }
  out.layer = static_cast<int32_t>(il);
  return true;
}

// The sub-layer section's format version (the `sublayers V T` line).
constexpr int64_t kSublayerSectionVersion = 1;
// The prefill section's format version (the `prefill V T B D` line).
constexpr int64_t kPrefillSectionVersion = 1;
// The newest file version this reader takes.
constexpr int64_t kNewestVersion = 3;

// A whole field as a finite float in [lo, hi].
bool parse_real(std::string_view s, double lo, double hi, float& out) {
  float v = 0;
  if (!parse_mass(s, v) || v < lo || v > hi) return false;
  out = v;
  return true;
}

bool parse_pattern(std::string_view s, PrefillPattern& out) {
  for (PrefillPattern p : {PrefillPattern::kAShape, PrefillPattern::kVerticalSlash, PrefillPattern::kBlockSparse})
    if (s == prefill_pattern_name(p)) {
      out = p;
      return true;
    }
  return false;
}

// The prefill section's header and head lines (`prefill V T B D`, `prefill-head L H PATTERN COLUMNS RECALL ALPHA
// BETA`); `seen` is empty until the header was read.
Status parse_prefill_line(const std::vector<std::string_view>& f, int64_t line_no, int64_t version, HeadProfile& p,
                          std::vector<bool>& seen) {
  if (f[0] == "prefill") {
    if (version < 3) return line_error(line_no, "a prefill section needs version 3 of the file");
    if (!seen.empty()) return line_error(line_no, "a second prefill section");
    if (p.n_layer == 0 || p.n_head == 0) return line_error(line_no, "prefill section before n_layer and n_head");
    int64_t section = 0, tokens = 0, budget = 0;
    if (f.size() != 5 || !parse_int(f[1], 0, 1 << 20, section))
      return line_error(line_no, "expected 'prefill VERSION TOKENS BUDGET DENSITY'");
    if (section != kPrefillSectionVersion)
      return line_error(line_no, "prefill section version " + std::to_string(section) + " is not " +
                                     std::to_string(kPrefillSectionVersion) + " (written by a newer longhaul?)");
    if (!parse_int(f[2], 1, kMaxProfileTokens, tokens) || !parse_int(f[3], 1, kMaxProfileTokens, budget))
      return line_error(
          line_no, "calibration tokens and budget must be integers in [1, " + std::to_string(kMaxProfileTokens) + "]");
    if (!parse_real(f[4], 0, 1, p.prefill_density) || p.prefill_density <= 0)
      return line_error(line_no, "density must be a finite number in (0, 1]");
    const int64_t n = static_cast<int64_t>(p.n_layer) * p.n_head;
    if (n > kMaxProfileEntries)
      return line_error(line_no,
                        "n_layer * n_head = " + std::to_string(n) + " exceeds " + std::to_string(kMaxProfileEntries));
    p.prefill_tokens = static_cast<int32_t>(tokens);
    p.prefill_budget = static_cast<int32_t>(budget);
    seen.assign(static_cast<size_t>(n), false);
    p.prefill.assign(static_cast<size_t>(n), HeadPrefill{});
    return Status::ok();
  }
  if (seen.empty()) return line_error(line_no, "prefill-head line before the 'prefill' line");
  if (f.size() != 8) return line_error(line_no, "expected 'prefill-head LAYER HEAD PATTERN COLUMNS RECALL ALPHA BETA'");
  int64_t il = 0, h = 0, columns = 0;
  if (!parse_int(f[1], 0, p.n_layer - 1, il)) return line_error(line_no, "layer is not an integer in [0, n_layer)");
  if (!parse_int(f[2], 0, p.n_head - 1, h)) return line_error(line_no, "head is not an integer in [0, n_head)");
  const size_t i = static_cast<size_t>(il * p.n_head + h);
  if (seen[i])
    return line_error(line_no, "layer " + std::to_string(il) + " head " + std::to_string(h) + " listed twice");
  HeadPrefill& e = p.prefill[i];
  if (!parse_pattern(f[3], e.pattern))
    return line_error(
        line_no, "pattern '" + std::string(f[3].substr(0, 32)) + "' is not a-shape, vertical-slash or block-sparse");
  if (!parse_int(f[4], 0, p.prefill_budget, columns) || (columns > 0) != (e.pattern == PrefillPattern::kVerticalSlash))
    return line_error(line_no, "columns must be in [1, budget] for vertical-slash and 0 for the other patterns");
  if (!parse_real(f[5], 0, 1, e.recall)) return line_error(line_no, "recall must be a finite number in [0, 1]");
  if (!parse_real(f[6], 0, kMaxProfileTokens, e.moa_alpha) || !parse_real(f[7], 0, 1, e.moa_beta))
    return line_error(line_no, "MoA's alpha must be a finite number of tokens >= 0 and beta one in [0, 1]");
  e.n_columns = static_cast<int32_t>(columns);
  e.listed = true;
  seen[i] = true;
  return Status::ok();
}

}  // namespace

const char* prefill_pattern_name(PrefillPattern pattern) {
  switch (pattern) {
    case PrefillPattern::kAShape:
      return "a-shape";
    case PrefillPattern::kVerticalSlash:
      return "vertical-slash";
    case PrefillPattern::kBlockSparse:
      return "block-sparse";
    case PrefillPattern::kHip:
      return "hip";
    case PrefillPattern::kHyper:
      return "hyper";
  }
  return "?";
}

std::string sublayer_name(const Sublayer& s) {
  return (s.kind == SublayerKind::kAttention ? "attn." : "ffn.") + std::to_string(s.layer);
}

Result<HeadProfile> parse_head_profile(std::string_view text) {
  HeadProfile p;
  std::vector<bool> seen;
  std::vector<bool> seen_sublayers;  // [n_layer * 2] once the sub-layer section is open
  std::vector<bool> seen_prefill;    // [n_layer * n_head] once the prefill section is open
  bool have_magic = false;
  int64_t version = 0, line_no = 0, n_seen = 0;
  for (size_t pos = 0; pos <= text.size();) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    const std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    const std::vector<std::string_view> f = fields(line);
    if (f.empty() || f[0][0] == '#') continue;
    if (!have_magic) {
      if (f.size() != 2 || f[0] != kMagic || !parse_int(f[1], 1, kNewestVersion, version))
        return line_error(
            line_no, "expected '" + std::string(kMagic) + " 1', '2' or '3', not a head profile (or a newer version)");
      have_magic = true;
      continue;
    }
    if (f[0] == "model") {
      if (f.size() != 2) return line_error(line_no, "'model' takes one file name without spaces");
      p.model = std::string(f[1]);
      continue;
    }
    if (f[0] == "n_layer" || f[0] == "n_head_kv" || f[0] == "n_head") {
      const bool layers = f[0] == "n_layer";
      int64_t v = 0;
      if (f.size() != 2 || !parse_int(f[1], 1, layers ? kMaxProfileLayers : kMaxProfileHeads, v))
        return line_error(line_no, std::string(f[0]) + " must be an integer in [1, " +
                                       std::to_string(layers ? kMaxProfileLayers : kMaxProfileHeads) + "]");
      if (!seen.empty() || !seen_sublayers.empty() || !seen_prefill.empty())
        return line_error(line_no, std::string(f[0]) + " must come before the head, sub-layer and prefill lines");
      if (f[0] == "n_head" && version < 3) return line_error(line_no, "n_head needs version 3 of the file");
      (layers ? p.n_layer : f[0] == "n_head" ? p.n_head : p.n_head_kv) = static_cast<int32_t>(v);
      continue;
    }
    if (f[0] == "prefill" || f[0] == "prefill-head") {
      LH_RETURN_IF_ERROR(parse_prefill_line(f, line_no, version, p, seen_prefill));
      continue;
    }
    if (f[0] == "sublayers") {
      if (version < 2) return line_error(line_no, "a sub-layer section needs version 2 of the file");
      if (!seen_sublayers.empty()) return line_error(line_no, "a second sub-layer section");
      if (p.n_layer == 0) return line_error(line_no, "sub-layer section before n_layer");
      int64_t section = 0, tokens = 0;
      if (f.size() != 3 || !parse_int(f[1], 0, 1 << 20, section))
        return line_error(line_no, "expected 'sublayers VERSION TOKENS'");
      if (section != kSublayerSectionVersion)
        return line_error(line_no, "sub-layer section version " + std::to_string(section) + " is not " +
                                       std::to_string(kSublayerSectionVersion) + " (written by a newer longhaul?)");
      if (!parse_int(f[2], 1, kMaxProfileTokens, tokens))
        return line_error(line_no, "calibration tokens must be an integer in [1, " + std::to_string(kMaxProfileTokens) + "]");
      p.sublayer_tokens = static_cast<int32_t>(tokens);
      seen_sublayers.assign(static_cast<size_t>(p.n_layer) * 2, false);
      continue;
    }
    if (f[0] == "sublayer") {
      if (seen_sublayers.empty()) return line_error(line_no, "sub-layer line before the 'sublayers' line");
      int64_t rank = 0;
      SublayerRemoval r;
      if (f.size() != 5) return line_error(line_no, "expected 'sublayer RANK attn.L|ffn.L KL AGREEMENT'");
      const int64_t expected = static_cast<int64_t>(p.sublayer_order.size()) + 1;
      if (!parse_int(f[1], 1, 1 << 20, rank) || rank != expected)
        return line_error(line_no, "rank must be " + std::to_string(expected) + " (the entries come in rank order)");
      if (!parse_sublayer(f[2], p.n_layer, r.sublayer))
        return line_error(line_no, "sub-layer '" + std::string(f[2].substr(0, 32)) + "' is not attn.L or ffn.L with L in [0, " +
                                       std::to_string(p.n_layer) + ")");
      const size_t i = static_cast<size_t>(r.sublayer.layer) * 2 + static_cast<size_t>(r.sublayer.kind);
      if (seen_sublayers[i]) return line_error(line_no, sublayer_name(r.sublayer) + " listed twice");
      if (!parse_mass(f[3], r.kl) || !parse_mass(f[4], r.agreement) || r.agreement > 1)
        return line_error(line_no, "kl must be a finite number in [0, 1e6] and agreement one in [0, 1]");
      seen_sublayers[i] = true;
      p.sublayer_order.push_back(r);
      continue;
    }
    if (p.n_layer == 0 || p.n_head_kv == 0) return line_error(line_no, "head line before n_layer and n_head_kv");
    if (seen.empty()) {
      const int64_t n = static_cast<int64_t>(p.n_layer) * p.n_head_kv;
      if (n > kMaxProfileEntries)
        return line_error(line_no, "n_layer * n_head_kv = " + std::to_string(n) + " exceeds " +
                                       std::to_string(kMaxProfileEntries));
      seen.assign(static_cast<size_t>(n), false);
      p.heads.assign(static_cast<size_t>(n), HeadScore{});
    }
    int64_t il = 0, h = 0;
    if (f.size() != 6) return line_error(line_no, "expected 'layer head score needle induction echo'");
    if (!parse_int(f[0], 0, p.n_layer - 1, il)) return line_error(line_no, "layer is not an integer in [0, n_layer)");
    if (!parse_int(f[1], 0, p.n_head_kv - 1, h)) return line_error(line_no, "head is not an integer in [0, n_head_kv)");
    const size_t i = static_cast<size_t>(il * p.n_head_kv + h);
    if (seen[i]) return line_error(line_no, "layer " + std::to_string(il) + " head " + std::to_string(h) + " listed twice");
    HeadScore& s = p.heads[i];
    if (!parse_mass(f[2], s.score) || !parse_mass(f[3], s.needle) || !parse_mass(f[4], s.induction) ||
        !parse_mass(f[5], s.echo))
      return line_error(line_no, "scores must be finite numbers in [0, 1e6]");
    seen[i] = true;
    ++n_seen;
  }
  if (!have_magic) return Status::error("head profile is empty");
  if (p.n_layer == 0 || p.n_head_kv == 0) return Status::error("head profile lacks n_layer or n_head_kv");
  const int64_t n = static_cast<int64_t>(p.n_layer) * p.n_head_kv;
  // Version 2 may hold no head scores (only the sub-layer order); a file that lists heads lists them all.
  if (n_seen != n && (version < 2 || n_seen != 0))
    return Status::error("head profile lists " + std::to_string(n_seen) + " of " + std::to_string(n) + " heads");
  if (n_seen == 0) p.heads.clear();
  if (p.n_head != 0 && p.n_head % p.n_head_kv != 0)
    return Status::error("head profile: n_head " + std::to_string(p.n_head) + " is not a multiple of n_head_kv " +
                         std::to_string(p.n_head_kv));
  if (!seen_prefill.empty() && std::find(seen_prefill.begin(), seen_prefill.end(), true) == seen_prefill.end())
    return Status::error("head profile: the prefill section lists no heads");
  return p;
}

std::string format_head_profile(const HeadProfile& p) {
  // The lowest version that holds the file's sections (version 1: head scores alone), so that older readers still
  // read it.
  const bool v1 = p.has_head_scores() && p.sublayer_order.empty() && !p.has_prefill();
  std::string out = std::string(kMagic) + (p.has_prefill() ? " 3\n" : v1 ? " 1\n" : " 2\n");
  if (!p.model.empty()) out += "model " + p.model + "\n";
  out += "n_layer " + std::to_string(p.n_layer) + "\n";
  out += "n_head_kv " + std::to_string(p.n_head_kv) + "\n";
  if (p.has_prefill()) out += "n_head " + std::to_string(p.n_head) + "\n";
  char line[160];
  if (p.has_head_scores()) {
    out += "# layer head score needle induction echo\n";
    for (int32_t il = 0; il < p.n_layer; ++il)
      for (int32_t h = 0; h < p.n_head_kv; ++h) {
        const HeadScore& s = p.at(il, h);
        std::snprintf(line, sizeof line, "%d %d %.6g %.6g %.6g %.6g\n", il, h, s.score, s.needle, s.induction, s.echo);
        out += line;
      }
  }
  if (!p.sublayer_order.empty()) {
    out += "sublayers " + std::to_string(kSublayerSectionVersion) + " " + std::to_string(std::max(1, p.sublayer_tokens)) + "\n";
    out += "# rank sublayer kl agreement\n";
    for (size_t i = 0; i < p.sublayer_order.size(); ++i) {
      const SublayerRemoval& r = p.sublayer_order[i];
      std::snprintf(line, sizeof line, "sublayer %zu %s %.6g %.6g\n", i + 1, sublayer_name(r.sublayer).c_str(), r.kl,
                    r.agreement);
      out += line;
    }
  }
  if (p.has_prefill()) {
    std::snprintf(line, sizeof line, "prefill %lld %d %d %.6g\n", static_cast<long long>(kPrefillSectionVersion),
                  std::max(1, p.prefill_tokens), std::max(1, p.prefill_budget), p.prefill_density);
    out += line;
    out += "# layer head pattern columns recall moa_alpha moa_beta\n";
    for (int32_t il = 0; il < p.n_layer; ++il)
      for (int32_t h = 0; h < p.n_head; ++h) {
        const HeadPrefill& e = p.prefill_at(il, h);
        if (!e.listed) continue;
        std::snprintf(line, sizeof line, "prefill-head %d %d %s %d %.6g %.6g %.6g\n", il, h,
                      prefill_pattern_name(e.pattern), e.n_columns, e.recall, e.moa_alpha, e.moa_beta);
        out += line;
      }
  }
  return out;
}

HeadProfile blank_head_profile(int32_t n_layer, int32_t n_head_kv) {
  HeadProfile p;
  p.n_layer = n_layer;
  p.n_head_kv = n_head_kv;
  p.heads.resize(static_cast<size_t>(n_layer) * static_cast<size_t>(n_head_kv));
  return p;
}

Result<HeadProfile> load_head_profile(const std::string& path) {
  Result<std::string> text = read_text_file(path);
  if (!text) return Status::error(text.message());
  Result<HeadProfile> p = parse_head_profile(*text);
  if (!p) return Status::error(path + ": " + p.message());
  p->source = path;
  return p;
}

Status save_head_profile(const HeadProfile& profile, const std::string& path) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return Status::error("cannot write head profile '" + tmp + "'");
  const std::string text = format_head_profile(profile);
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok) {
    std::remove(tmp.c_str());
    return Status::error("cannot write head profile '" + tmp + "'");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return Status::error("cannot rename '" + tmp + "' to '" + path + "'");
  }
  return Status::ok();
}

}  // namespace longhaul::kv
