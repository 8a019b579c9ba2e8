#include "eval/report.h"

#include "base/strings.h"

#include "kv/policy_params.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace longhaul::eval {
namespace {

std::string format(double v, const char* fmt) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}
std::string opt(const std::optional<double>& v, const char* fmt) { return v ? format(*v, fmt) : std::string(); }

}  // namespace

std::string csv_header() { return "policy,length,depth,accuracy,ppl,kv_bytes,point_peak_rss_bytes,prefill_tps,decode_tps,keys_read"; }

std::string csv_line(const EvalRow& r) {
  std::string policy = r.policy;
  if (policy.find_first_of(",\"") != std::string::npos) {
    std::string q = "\"";
    for (char c : policy) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    policy = q + "\"";
  }
  return policy + "," + std::to_string(r.length) + "," + opt(r.depth, "%g") + "," + opt(r.accuracy, "%g") + "," +
         opt(r.ppl, "%.4f") + "," + std::to_string(r.kv_bytes) + "," + std::to_string(r.peak_rss_bytes) + "," +
         opt(r.prefill_tps, "%.1f") + "," + opt(r.decode_tps, "%.1f") + "," + opt(r.keys_read, "%.4f");
}

std::string markdown_table(const std::vector<EvalRow>& rows) {
  std::string out =
      "| policy | length | depth | accuracy | ppl | KV MiB | point peak RSS MiB | prefill tok/s | decode tok/s | keys read |\n"
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const EvalRow& r : rows) {
    out += "| " + r.policy + " | " + std::to_string(r.length) + " | " + opt(r.depth, "%g") + " | " +
           opt(r.accuracy, "%.2f") + " | " + opt(r.ppl, "%.3f") + " | " +
           format(static_cast<double>(r.kv_bytes) / (1 << 20), "%.1f") + " | " +
           format(static_cast<double>(r.peak_rss_bytes) / (1 << 20), "%.0f") + " | " + opt(r.prefill_tps, "%.1f") +
           " | " + opt(r.decode_tps, "%.1f") + " | " + opt(r.keys_read, "%.3f") + " |\n";
  }
  return out;
}

Result<std::vector<int32_t>> parse_lengths(const std::string& list) {
  std::vector<int32_t> out;
  for (const std::string& item : split(list, ',')) {
    std::string s = item;
    int64_t mult = 1;
    if (!s.empty() && (s.back() == 'k' || s.back() == 'K')) {
      mult = 1024;
      s.pop_back();
    }
    char* end = nullptr;
    errno = 0;
    const long long v = s.empty() ? -1 : std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || errno != 0 || *end != '\0' || v < 1 || v * mult > (1 << 24))
      return Status::error("length '" + item + "' is not a token count in [1, 16777216] (e.g. 4096 or 4k)");
    out.push_back(static_cast<int32_t>(v * mult));
  }
  if (out.empty()) return Status::error("no lengths given");
  return out;
}

Result<std::vector<double>> parse_depths(const std::string& list) {
  std::vector<double> out;
  for (const std::string& item : split(list, ',')) {
    char* end = nullptr;
    const double v = item.empty() ? -1.0 : std::strtod(item.c_str(), &end);
    if (item.empty() || *end != '\0' || !(v >= 0.0 && v <= 1.0))
      return Status::error("depth '" + item + "' is not a number in [0, 1]");
    out.push_back(v);
  }
  if (out.empty()) return Status::error("no depths given");
  return out;
}

Result<PolicySpec> parse_policy_spec(const std::string& spec) {
  // budget=P% is eval's own (a budget per length); the rest is the KV policy syntax every command reads, split by
  // the same reader (kv::PolicyParams) so that its form errors read the same.
  LH_ASSIGN_OR_RETURN(const kv::PolicyParams params, kv::PolicyParams::parse(spec));
  PolicySpec out;
  out.name = params.name();
  out.spec = params.name();
  const std::vector<std::string> parts = split(spec, ':');
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& part = parts[i];  // key=value (PolicyParams::parse checked the form)
    const size_t eq = part.find('=');
    if (part.compare(0, eq, "budget") == 0 && part.back() == '%') {
      char* end = nullptr;
      const double pct = std::strtod(part.c_str() + eq + 1, &end);
      if (end != part.c_str() + part.size() - 1 || end == part.c_str() + eq + 1 || !(pct > 0 && pct <= 100))
        return Status::error("KV policy parameter '" + part + "' in '" + spec + "' is not budget=P% with P in (0, 100]");
      out.budget_fraction = pct / 100.0;
      continue;
    }
    out.spec += ":" + part;
  }
  return out;
}

std::string PolicySpec::spec_for(int32_t length) const {
  if (budget_fraction <= 0) return spec;
  const auto budget = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(budget_fraction * length)));
  return spec + ":budget=" + std::to_string(budget);
}

Result<std::vector<PolicySpec>> parse_policy_list(const std::string& list) {
  std::vector<PolicySpec> out;
  for (const std::string& item : split(list, ',')) {
    LH_ASSIGN_OR_RETURN(PolicySpec p, parse_policy_spec(item));
    out.push_back(std::move(p));
  }
  if (out.empty()) return Status::error("no KV policy given");
  return out;
}

}  // namespace longhaul::eval
