// The eval results as CSV (machine-readable, fixed columns) and as a Markdown table.
// Also the parsers of the eval command's list flags.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "eval/task.h"

namespace longhaul::eval {

// "policy,length,depth,accuracy,ppl,kv_bytes,point_peak_rss_bytes,prefill_tps,decode_tps,keys_read":
// point_peak_rss_bytes is the peak resident set while that row's point ran (see EvalRow::peak_rss_bytes), not the
// process's so far; keys_read the share of cached key cells a decode token read (EvalRow::keys_read).
std::string csv_header();
// One line (no newline); empty fields where the row has no value; the policy quoted when it holds a comma.
std::string csv_line(const EvalRow& row);
// Header, separator and one line per row, each ending in a newline.
std::string markdown_table(const std::vector<EvalRow>& rows);

// "1k,2k,4096" -> {1024, 2048, 4096}; k = 1024. Each value in [1, 2^24].
Result<std::vector<int32_t>> parse_lengths(const std::string& list);
// "0,0.25,1" -> {0, 0.25, 1}; each value in [0, 1].
Result<std::vector<double>> parse_depths(const std::string& list);

// One policy of eval's comparison: a KV policy as every command writes it, "name:key=value:..." (each policy
// reads its own keys, kv/policy_registry.h), where the budget may also be a share of each prompt length,
// budget=P% (e.g. "h2o:budget=25%:recent=64"): the sweep then builds "h2o:budget=N:recent=64" for each length.
// Only the form is checked here; the policy checks its parameters when it is built (cli check_kv_policies).
struct PolicySpec {
  std::string name;            // the policy's name, the spec's first part
  std::string spec;            // the spec without budget=P%
  double budget_fraction = 0;  // > 0: the budget is ceil(budget_fraction * length) cells (budget=P%)

  // The spec a prompt of `length` tokens runs: `spec`, with budget=ceil(budget_fraction * length) when the budget
  // is a share.
  std::string spec_for(int32_t length) const;
};
Result<PolicySpec> parse_policy_spec(const std::string& spec);
// A comma-separated list of specs.
Result<std::vector<PolicySpec>> parse_policy_list(const std::string& list);

}  // namespace longhaul::eval
