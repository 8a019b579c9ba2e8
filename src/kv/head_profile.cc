#include "kv/head_profile.h"

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

}  // namespace

Result<HeadProfile> parse_head_profile(std::string_view text) {
  HeadProfile p;
  std::vector<bool> seen;
  bool have_magic = false;
  int64_t line_no = 0, n_seen = 0;
  for (size_t pos = 0; pos <= text.size();) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    const std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    const std::vector<std::string_view> f = fields(line);
    if (f.empty() || f[0][0] == '#') continue;
    if (!have_magic) {
      int64_t version = 0;
      if (f.size() != 2 || f[0] != kMagic || !parse_int(f[1], 1, 1, version))
        return line_error(line_no, "expected '" + std::string(kMagic) + " 1', not a head profile (or a newer version)");
      have_magic = true;
      continue;
    }
    if (f[0] == "model") {
      if (f.size() != 2) return line_error(line_no, "'model' takes one file name without spaces");
      p.model = std::string(f[1]);
      continue;
    }
    if (f[0] == "n_layer" || f[0] == "n_head_kv") {
      const bool layers = f[0] == "n_layer";
      int64_t v = 0;
      if (f.size() != 2 || !parse_int(f[1], 1, layers ? kMaxProfileLayers : kMaxProfileHeads, v))
        return line_error(line_no, std::string(f[0]) + " must be an integer in [1, " +
                                       std::to_string(layers ? kMaxProfileLayers : kMaxProfileHeads) + "]");
      if (!seen.empty()) return line_error(line_no, std::string(f[0]) + " must come before the head lines");
      (layers ? p.n_layer : p.n_head_kv) = static_cast<int32_t>(v);
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
  if (n_seen != n)
    return Status::error("head profile lists " + std::to_string(n_seen) + " of " + std::to_string(n) + " heads");
  return p;
}

std::string format_head_profile(const HeadProfile& p) {
  std::string out = std::string(kMagic) + " 1\n";
  if (!p.model.empty()) out += "model " + p.model + "\n";
  out += "n_layer " + std::to_string(p.n_layer) + "\n";
  out += "n_head_kv " + std::to_string(p.n_head_kv) + "\n";
  out += "# layer head score needle induction echo\n";
  char line[160];
  for (int32_t il = 0; il < p.n_layer; ++il)
    for (int32_t h = 0; h < p.n_head_kv; ++h) {
      const HeadScore& s = p.at(il, h);
      std::snprintf(line, sizeof line, "%d %d %.6g %.6g %.6g %.6g\n", il, h, s.score, s.needle, s.induction, s.echo);
      out += line;
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
