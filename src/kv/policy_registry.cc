#include "kv/policy_registry.h"

#include "base/strings.h"

#include <cstdlib>
#include <sstream>

namespace longhaul::kv {
namespace {

struct Entry {
  const char* name;
  KvPolicyFactory make;
  const char* params;  // the name:key=value parameters the policy reads, besides the cell storage's
};

// One line per policy.
constexpr Entry kPolicies[] = {
    {"full", make_full_policy, ""},
    {"streaming", make_streaming_policy, "sink window"},
    {"lm-infinite", make_lm_infinite_policy, "sink window"},
    {"h2o", make_h2o_policy, "budget recent select"},
    {"a2sf", make_a2sf_policy, "budget recent forget select"},
    {"tova", make_tova_policy, "budget"},
    {"snapkv", make_snapkv_policy, "budget obs pool select"},
    {"kv-quant", make_kv_quant_policy, ""},
    {"duo", make_duo_policy, "retrieval sink window"},
};

// Every policy stores its cells as these say (KIVI, kv/kv_cache.h KvQuantOptions).
constexpr const char* kStorageParams = "bits group residual";

const Entry* find_entry(std::string_view name) {
  for (const Entry& e : kPolicies)
    if (name == e.name) return &e;
  return nullptr;
}

std::string known_names() {
  std::string known;
  for (const Entry& e : kPolicies) known += (known.empty() ? "" : ", ") + std::string(e.name);
  return known;
}

bool lists(const char* words, const std::string& key) {
  std::istringstream in(words);
  std::string w;
  while (in >> w)
    if (w == key) return true;
  return false;
}

std::string comma_list(const std::string& words) {
  std::istringstream in(words);
  std::string w, out;
  while (in >> w) out += (out.empty() ? "" : ", ") + w;
  return out;
}

}  // namespace

Result<std::unique_ptr<KvPolicy>> make_kv_policy(const std::string& name, const KvPolicyContext& context,
                                                 const KvPolicyOptions& options) {
  if (const Entry* e = find_entry(name)) return e->make(context, options);
  return Status::error("unknown KV policy '" + name + "' (known: " + known_names() + ")");
}

Result<KvPolicyChoice> parse_kv_policy(std::string_view spec_view, const KvPolicyOptions& base) {
  const std::string spec(spec_view);
  std::vector<std::string> parts = split(spec, ':');
  if (parts.empty() || parts[0].empty()) return Status::error("empty KV policy in '" + spec + "'");
  KvPolicyChoice out{parts[0], base};
  const Entry* entry = find_entry(parts[0]);
  if (entry == nullptr) return Status::error("unknown KV policy '" + parts[0] + "' (known: " + known_names() + ")");
  for (size_t i = 1; i < parts.size(); ++i) {
    const size_t eq = parts[i].find('=');
    const std::string key = parts[i].substr(0, eq);
    // A parameter the policy does not read is refused, not ignored: full:budget=10 would otherwise look like a
    // bounded cache.
    if (!lists(entry->params, key) && !lists(kStorageParams, key))
      return Status::error("KV policy " + parts[0] + " has no parameter '" + key + "' (in '" + spec + "'; its parameters: " +
                           comma_list(std::string(entry->params) + " " + kStorageParams) + ")");
    char* end = nullptr;
    if (key == "retrieval" && eq != std::string::npos) {
      const float f = std::strtof(parts[i].c_str() + eq + 1, &end);
      if (*end != '\0' || end == parts[i].c_str() + eq + 1 || !(f >= 0.0f && f <= 1.0f))
        return Status::error("KV policy parameter '" + parts[i] + "' in '" + spec + "' is not retrieval=F with F in [0, 1]");
      out.options.retrieval_fraction = f;
      continue;
    }
    if (key == "select" && eq != std::string::npos) {
      const std::string v = parts[i].substr(eq + 1);
      if (v != "head" && v != "layer")
        return Status::error("KV policy parameter '" + parts[i] + "' in '" + spec + "' is not select=head or select=layer");
      out.options.select_per_head = v == "head";
      continue;
    }
    if (key == "forget" && eq != std::string::npos) {
      const float f = std::strtof(parts[i].c_str() + eq + 1, &end);
      if (*end != '\0' || end == parts[i].c_str() + eq + 1 || !(f > 0.0f && f <= 1.0f))
        return Status::error("KV policy parameter '" + parts[i] + "' in '" + spec + "' is not forget=F with F in (0, 1]");
      out.options.forgetting_factor = f;
      continue;
    }
    const long v = eq == std::string::npos ? -1 : std::strtol(parts[i].c_str() + eq + 1, &end, 10);
    if (eq == std::string::npos || *end != '\0' || v < 0 || v > (1 << 24))
      return Status::error("KV policy parameter '" + parts[i] + "' in '" + spec +
                           "' is not key=N with N in [0, 16777216]");
    const auto n = static_cast<int32_t>(v);
    // A value given is used as given: 0 is not "the default" here (that is what leaving the key out means).
    struct Range {
      const char* key;
      int32_t lo;
      const char* why;
    };
    static constexpr Range kMinimum[] = {{"budget", 2, "cells"},       {"window", 1, "tokens"},
                                         {"recent", 1, "tokens"},      {"obs", 1, "queries"},
                                         {"pool", 1, "cells"},         {"group", 1, "cells"},
                                         {"bits", 4, "bits: 16, 8 or 4"}};
    for (const Range& r : kMinimum)
      if (key == r.key && n < r.lo)
        return Status::error("KV policy parameter '" + parts[i] + "' in '" + spec + "' must be >= " + std::to_string(r.lo) +
                             " " + r.why);
    if (key == "budget") out.options.budget = n;
    else if (key == "sink") out.options.sink_tokens = n;
    else if (key == "window") out.options.window = n;
    else if (key == "recent") out.options.recent = n;
    else if (key == "obs") out.options.observation_window = n;
    else if (key == "pool") out.options.pool_kernel = n;
    else if (key == "bits") out.options.kv_bits = n;
    else if (key == "group") out.options.kv_group = n;
    else if (key == "residual") out.options.kv_residual = n;
    else
      return Status::error("unknown KV policy parameter '" + key + "' in '" + spec +
                           "' (known: budget, sink, window, recent, forget, obs, pool, select, bits, group, residual, retrieval)");
  }
  return out;
}

std::vector<std::string> kv_policy_names() {
  std::vector<std::string> names;
  for (const Entry& e : kPolicies) names.emplace_back(e.name);
  return names;
}

}  // namespace longhaul::kv
