#include "kv/policy_params.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "base/strings.h"

namespace longhaul::kv {
namespace {

std::string format_float(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", static_cast<double>(v));
  return buf;
}

}  // namespace

Result<PolicyParams> PolicyParams::parse(std::string_view spec_view) {
  PolicyParams p;
  p.spec_ = std::string(spec_view);
  const std::vector<std::string> parts = split(p.spec_, ':');
  if (parts.empty() || parts[0].empty()) return Status::error("empty KV policy name in '" + p.spec_ + "'");
  p.name_ = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) {
    const size_t eq = parts[i].find('=');
    if (eq == std::string::npos || eq == 0)
      return Status::error("KV policy parameter '" + parts[i] + "' in '" + p.spec_ + "' is not key=value");
    Entry e{parts[i].substr(0, eq), parts[i].substr(eq + 1), false};
    for (const Entry& seen : p.entries_)
      if (seen.key == e.key)
        return Status::error("KV policy parameter '" + e.key + "' is given twice in '" + p.spec_ + "'");
    p.entries_.push_back(std::move(e));
  }
  return p;
}

PolicyParams::Entry* PolicyParams::ask(std::string_view key, ParamDoc doc) {
  bool documented = false;
  for (const ParamDoc& d : asked_) documented = documented || d.key == key;
  if (!documented) asked_.push_back(std::move(doc));
  for (Entry& e : entries_)
    if (e.key == key) {
      e.read = true;
      return &e;
    }
  return nullptr;
}

void PolicyParams::refuse(const Entry& e, const std::string& what) {
  if (error_.empty())
    error_ = "KV policy parameter '" + e.key + "=" + e.value + "' in '" + spec_ + "' " + what;
}

int32_t PolicyParams::get_int(std::string_view key, int32_t fallback, int32_t min, int32_t max,
                              std::string_view meaning, std::string_view fallback_text) {
  // (std::string on the left of every +: g++ 12 warns falsely, -Wrestrict, on a literal + a temporary string.)
  const std::string range = std::string("[") + std::to_string(min) + ", " + std::to_string(max) + "]";
  const Entry* e = ask(key, {std::string(key), "N",
                             fallback_text.empty() ? std::to_string(fallback) : std::string(fallback_text), range,
                             std::string(meaning)});
  if (e == nullptr) return fallback;
  char* end = nullptr;
  errno = 0;
  const long long v = e->value.empty() ? 0 : std::strtoll(e->value.c_str(), &end, 10);
  if (e->value.empty() || *end != '\0' || errno != 0) {
    refuse(*e, "is not " + e->key + "=N with N an integer in " + range);
    return fallback;
  }
  const std::string why = " (" + e->key + ": " + std::string(meaning) + ")";
  if (v < min) {
    refuse(*e, "must be >= " + std::to_string(min) + why);
    return fallback;
  }
  if (v > max) {
    refuse(*e, "must be <= " + std::to_string(max) + why);
    return fallback;
  }
  return static_cast<int32_t>(v);
}

float PolicyParams::get_float(std::string_view key, float fallback, float lo, float hi, bool lo_open,
                              std::string_view meaning) {
  const std::string range = std::string(lo_open ? "(" : "[") + format_float(lo) + ", " + format_float(hi) + "]";
  const Entry* e = ask(key, {std::string(key), "F", format_float(fallback), range, std::string(meaning)});
  if (e == nullptr) return fallback;
  char* end = nullptr;
  const float v = e->value.empty() ? 0.0f : std::strtof(e->value.c_str(), &end);
  // The comparisons are false for NaN, which is refused with the rest.
  const bool above_lo = lo_open ? v > lo : v >= lo;
  if (e->value.empty() || *end != '\0' || !(above_lo && v <= hi)) {
    refuse(*e, "is not " + e->key + "=F with F in " + range + " (" + std::string(meaning) + ")");
    return fallback;
  }
  return v;
}

std::string PolicyParams::get_word(std::string_view key, std::string_view fallback,
                                   std::initializer_list<std::string_view> words, std::string_view meaning) {
  std::string form, choices;
  size_t i = 0;
  for (std::string_view w : words) {
    form += std::string(form.empty() ? "" : "|") + std::string(w);
    choices += std::string(i == 0 ? "" : i + 1 == words.size() ? " or " : ", ") + std::string(key) + "=" + std::string(w);
    ++i;
  }
  const Entry* e = ask(key, {std::string(key), form, std::string(fallback), "", std::string(meaning)});
  if (e == nullptr) return std::string(fallback);
  for (std::string_view w : words)
    if (e->value == w) return e->value;
  refuse(*e, "is not " + choices);
  return std::string(fallback);
}

Status PolicyParams::refusal() const { return error_.empty() ? Status::ok() : Status::error(error_); }

Status PolicyParams::status() const {
  LH_RETURN_IF_ERROR(refusal());
  for (const Entry& e : entries_) {
    if (e.read) continue;
    std::string keys;
    for (const ParamDoc& d : asked_) keys += (keys.empty() ? "" : ", ") + d.key;
    return Status::error("KV policy " + name_ + " has no parameter '" + e.key + "' (in '" + spec_ +
                         "'; its parameters: " + (keys.empty() ? "none" : keys) + ")");
  }
  return Status::ok();
}

}  // namespace longhaul::kv
