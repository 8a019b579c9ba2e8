// longhaul eval: long-context tasks (passkey, niah*, ppl) through one or more KV policies.
// Progress on stderr, a Markdown table on stdout, optionally a CSV file and a PNG plot.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>

#include "base/mapped_file.h"
#include "base/sys_info.h"
#include "commands.h"
#include "common.h"
#include "eval/plot.h"
#include "eval/ppl.h"
#include "eval/report.h"
#include "eval/task.h"

namespace longhaul::cli {
namespace {

struct EvalFlags {
  ModelFlags model;
  KvPolicyFlags kv;
  PrefillFlags prefill;  // --prefill-attn
  PruneFlags prune;      // --prune-sublayers
  std::string task = "passkey";
  std::string lengths = "1k,2k,4k";
  std::string depths = "0,0.25,0.5,0.75,1";
  uint64_t seed = 1234;
  int32_t samples = 1;
  std::string csv;
  std::string plot;
  std::string text;
  int32_t chunk = 64;
  int32_t n_threads = 0;
};

int run(const EvalFlags& f) {
  // Every flag is checked before the model loads, and everything that needs the model before the first point:
  // a sweep never runs to its end only to fail on an argument.
  std::unique_ptr<eval::Task> task = require_valid(eval::make_task(f.task));
  eval::EvalSpec spec;
  spec.lengths = require_valid(eval::parse_lengths(f.lengths));
  spec.depths = require_valid(eval::parse_depths(f.depths));
  spec.seed = f.seed;
  spec.samples = f.samples;
  spec.chunk = f.chunk;
  if (!f.csv.empty()) require_writable_path(f.csv, "--csv");
  if (!f.plot.empty()) {
    require_writable_path(f.plot, "--plot");
    if (Status s = eval::check_plotting(); !s) return report_error(s.message());
  }
  const int32_t n_threads = cap_threads(f.n_threads);
  if (f.task == "ppl") {
    Result<std::string> text = f.text.empty() ? eval::default_eval_text() : read_input_file(f.text);
    if (!text) return report_error(text.message());
    spec.text = std::move(text).value();
  }
  Result<LoadedModel> loaded = load_model(f.model.model);
  if (!loaded) return report_error(loaded.message());
  const std::vector<eval::PolicySpec> policies = check_kv_policies(*loaded->model, f.kv.policy, spec.lengths);
  Result<model::PrefillAttentionOptions> prepared =
      prepare_prefill_attention(*loaded->model, f.prefill, f.kv.head_profile, n_threads);
  if (!prepared) return report_error(prepared.message());
  const model::PrefillAttentionOptions prefill = std::move(prepared).value();
  check_prune(*loaded->model, f.prune);
  require_valid(task->check(*loaded->tokenizer, spec));
  warn_past_training_context(*loaded->model, *std::max_element(spec.lengths.begin(), spec.lengths.end()),
                             "the eval length");
  Result<std::shared_ptr<const kv::HeadProfile>> head_profile =
      prepare_head_profile(*loaded->model, f.kv.policy, f.kv.head_profile, n_threads, f.prune.n_pruned > 0);
  if (!head_profile) return report_error(head_profile.message());
  Result<model::SublayerSkip> pruned = pruned_sublayers(*loaded->model, f.prune, *head_profile);
  if (!pruned) return report_error(pruned.message());

  std::FILE* csv = nullptr;
  if (!f.csv.empty()) {
    csv = std::fopen(f.csv.c_str(), "w");
    if (csv == nullptr) return report_error("cannot write CSV file '" + f.csv + "'");
    std::fprintf(csv, "%s\n", eval::csv_header().c_str());
  }
  std::vector<eval::EvalRow> rows;
  // Each row's peak RSS is its own point's: the meter restarts after every row.
  PeakRssMeter point_peak;
  // A budget given as a share of the length (budget=25%) is one run per length, each with its own budget.
  struct Run {
    const eval::PolicySpec* policy;
    eval::EvalSpec spec;
    std::string kv_policy;  // the spec this run's sessions build
  };
  std::vector<Run> runs;
  for (const eval::PolicySpec& p : policies) {
    if (p.budget_fraction <= 0) {
      runs.push_back({&p, spec, p.spec});
      continue;
    }
    for (int32_t length : spec.lengths) {
      Run r{&p, spec, p.spec_for(length)};
      r.spec.lengths = {length};
      runs.push_back(std::move(r));
    }
  }
  for (const Run& run : runs) {
    const eval::PolicySpec& p = *run.policy;
    eval::TaskContext ctx{*loaded->model, *loaded->tokenizer, {}, run.spec, nullptr, nullptr};
    ctx.session.n_threads = n_threads;
    ctx.session.kv_policy = run.kv_policy;
    ctx.session.head_profile = *head_profile;
    ctx.session.prefill_attn = prefill;
    ctx.session.skip = *pruned;
    ctx.progress = status_line_printer();
    ctx.emit = [&](const eval::EvalRow& emitted) {
      eval::EvalRow row = emitted;
      // Rows name the prefill attention when it is not dense (the KV policy alone does not say how prompts ran).
      if (prefill.mode != model::PrefillAttention::kDense)
        row.policy += " prefill=" + model::describe_prefill_attention(prefill);
      // And the pruned sub-layers: the rows are not the whole model's.
      if (f.prune.n_pruned > 0) row.policy += " pruned=" + pruned->describe();
      row.peak_rss_bytes = point_peak.peak_bytes();
      rows.push_back(row);
      if (csv != nullptr) {
        std::fprintf(csv, "%s\n", eval::csv_line(row).c_str());
        std::fflush(csv);
      }
      point_peak.restart();
    };
    point_peak.restart();
    Status s = task->run(ctx);
    clear_status_line();
    if (!s) {
      if (csv != nullptr) std::fclose(csv);
      return report_error(p.name + ": " + s.message());
    }
  }
  if (csv != nullptr) std::fclose(csv);
  std::printf("%s", eval::markdown_table(rows).c_str());
  if (!f.plot.empty()) {
    if (Status s = eval::write_plot(rows, f.plot); !s) return report_error(s.message());
    std::fprintf(stderr, "plot written to %s\n", f.plot.c_str());
  }
  return 0;
}

}  // namespace

Runner add_eval_command(CLI::App& app) {
  auto flags = std::make_shared<EvalFlags>();
  CLI::App* cmd = app.add_subcommand("eval", "Long-context evaluation (passkey, niah, ppl) through KV policies");
  add_model_flags(*cmd, flags->model);
  add_kv_policy_flags(*cmd, flags->kv);
  add_prefill_flags(*cmd, flags->prefill);
  add_prune_flags(*cmd, flags->prune);
  cmd->get_option("--kv-policy")
      ->description("KV policies to compare, comma-separated, each NAME:KEY=VALUE:... as listed below; eval also "
                    "takes budget=P% (a share of each length), e.g. "
                    "full,streaming:sink=0,h2o:budget=25%,snapkv:select=layer,kv-quant:bits=4,duo:retrieval=0.25");
  std::string task_list;
  for (const std::string& name : eval::task_names()) task_list += (task_list.empty() ? "" : ", ") + name;
  cmd->add_option("--task", flags->task, "task: " + task_list)->capture_default_str();
  cmd->add_option("--lengths", flags->lengths, "prompt lengths (passkey) or bucket ends (ppl), e.g. 1k,2k,4k")
      ->capture_default_str();
  cmd->add_option("--depths", flags->depths, "passkey: key depths in [0, 1]")->capture_default_str();
  cmd->add_option("--seed", flags->seed, "passkey: seed of the keys")->capture_default_str();
  cmd->add_option("--samples", flags->samples, "passkey: keys per (length, depth)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--csv", flags->csv, "also write the rows to this CSV file");
  cmd->add_option("--plot", flags->plot,
                  "also draw a PNG (gnuplot): accuracy against KV memory and length, or perplexity and KV memory "
                  "against position");
  cmd->add_option("--text", flags->text, "ppl: text file to score (default: /usr/share/common-licenses/*)");
  cmd->add_option("--chunk", flags->chunk, "ppl: tokens per step (1: token by token, exact for every policy)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  add_threads_flag(*cmd, flags->n_threads);
  return [flags]() { return run(*flags); };
}

}  // namespace longhaul::cli
