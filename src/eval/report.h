// The eval results as CSV (machine-readable, fixed columns) and as a Markdown table.
// Also the parsers of the eval command's list flags.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "eval/task.h"
#include "kv/kv_policy.h"

namespace longhaul::eval {

// "policy,length,depth,accuracy,ppl,kv_bytes,point_peak_rss_bytes,prefill_tps,decode_tps": point_peak_rss_bytes is
// the peak resident set while that row's point ran (see EvalRow::peak_rss_bytes), not the process's so far.
std::string csv_header();
// One line (no newline); empty fields where the row has no value; the policy quoted when it holds a comma.
std::string csv_line(const EvalRow& row);
// Header, separator and one line per row, each ending in a newline.
std::string markdown_table(const std::vector<EvalRow>& rows);

// "1k,2k,4096" -> {1024, 2048, 4096}; k = 1024. Each value in [1, 2^24].
Result<std::vector<int32_t>> parse_lengths(const std::string& list);
// "0,0.25,1" -> {0, 0.25, 1}; each value in [0, 1].
Result<std::vector<double>> parse_depths(const std::string& list);

// A policy with per-policy overrides: "streaming:sink=0:window=1020". Keys: budget (N
// cells or P% of each length), sink, window, recent, forget (a float), obs, pool,
// retrieval (a float), and the cell storage bits, group, residual ("kv-quant:bits=4");
// unset keys keep the values of `base`.
// budget=P% gives the budget as a share of each prompt length (budget_fraction); retrieval=F sets duo's share of
// retrieval heads.
struct PolicySpec {
  std::string name;
  kv::KvPolicyOptions options;
  double budget_fraction = 0;  // > 0: options.budget = ceil(budget_fraction * length) for each length (budget=P%)
};
Result<PolicySpec> parse_policy_spec(const std::string& spec, const kv::KvPolicyOptions& base);
// A comma-separated list of specs.
Result<std::vector<PolicySpec>> parse_policy_list(const std::string& list, const kv::KvPolicyOptions& base);

}  // namespace longhaul::eval
