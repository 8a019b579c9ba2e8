// longhaul calibrate-prefill: MInference's offline pattern search and MoA's span rules (eval/prefill_calibration.h),
// written into the head profile's prefill section, by default beside the model, where --prefill-attn minference and
// moa find it.
#include <algorithm>
#include <cstdio>
#include <memory>

#include "commands.h"
#include "common.h"
#include "eval/prefill_calibration.h"

namespace longhaul::cli {
namespace {

struct CalibratePrefillFlags {
  ModelFlags model;
  std::string output;
  eval::PrefillCalibrationOptions options;
};

int run(const CalibratePrefillFlags& f) {
  eval::PrefillCalibrationOptions options = f.options;
  options.n_threads = cap_threads(options.n_threads);
  std::string out;
  Result<kv::HeadProfile> profile = calibrate_into_profile(
      f.model, f.output,
      [&](const LoadedModel& loaded, const std::function<void(const std::string&)>& progress) {
        return eval::calibrate_prefill(*loaded.model, *loaded.tokenizer, options, progress);
      },
      out);
  if (!profile) return report_error(profile.message());

  // Per global layer: each head's pattern and MoA span at the longest profiled length.
  const kv::HeadProfile& p = *profile;
  int32_t n_longest = 0;
  for (int32_t n : options.lengths) n_longest = std::max(n_longest, n);
  int32_t counts[3] = {0, 0, 0};
  std::printf("| layer | head | pattern | columns | recall | MoA alpha | MoA beta | span at %d |\n", n_longest);
  std::printf("| ----: | ---: | ------- | ------: | -----: | --------: | -------: | ---------: |\n");
  for (int32_t il = 0; il < p.n_layer; ++il)
    for (int32_t h = 0; h < p.n_head; ++h) {
      const kv::HeadPrefill& e = p.prefill_at(il, h);
      if (!e.listed) continue;
      ++counts[static_cast<int>(e.pattern)];
      std::printf("| %d | %d | %s | %d | %.4f | %.0f | %.4g | %.0f |\n", il, h, kv::prefill_pattern_name(e.pattern),
                  e.n_columns, e.recall, e.moa_alpha, e.moa_beta, e.moa_alpha + e.moa_beta * n_longest);
    }
  std::fprintf(stderr,
               "prefill section (%d a-shape, %d vertical-slash, %d block-sparse heads; MoA density %g) written to %s\n",
               counts[0], counts[1], counts[2], static_cast<double>(p.prefill_density), out.c_str());
  return 0;
}

}  // namespace

Runner add_calibrate_prefill_command(CLI::App& app) {
  auto flags = std::make_shared<CalibratePrefillFlags>();
  CLI::App* cmd = app.add_subcommand(
      "calibrate-prefill",
      "Assign each attention head its sparse prefill pattern (MInference's offline search) and its MoA span rule, "
      "for --prefill-attn minference and moa");
  add_model_flags(*cmd, flags->model);
  cmd->add_option("-o,--output", flags->output, "profile file (default: MODEL.gguf.heads beside the model)");
  auto& o = flags->options;
  cmd->add_option("--lengths", o.lengths,
                  "tokens of the passkey prompts profiled, one each (MoA fits its rules over them)")
      ->capture_default_str()
      ->delimiter(',')
      ->check(CLI::Range(128, kv::kMaxProfileTokens));
  cmd->add_option("--budget", o.budget, "keys per query each candidate pattern computes (equal compute)")
      ->capture_default_str()
      ->check(CLI::Range(model::kMInferenceMinBudget, kv::kMaxProfileTokens));
  cmd->add_option("--spread", o.n_spread_blocks, "64-query blocks sampled over each prompt besides its last 64 queries")
      ->capture_default_str()
      ->check(CLI::Range(0, 4096));
  cmd->add_option("--density", o.density, "MoA: the mean span / N over heads the rules are chosen under, in (0, 1]")
      ->capture_default_str()
      ->check(CLI::Range(1e-3, 1.0));
  cmd->add_option("--seed", o.seed, "seed of the passkeys")->capture_default_str();
  add_threads_flag(*cmd, o.n_threads);
  return [flags]() { return run(*flags); };
}

}  // namespace longhaul::cli
