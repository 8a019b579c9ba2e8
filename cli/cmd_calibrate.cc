// longhaul calibrate-heads: scores every KV head for the duo policy (eval/head_calibration.h) and writes the head
// profile, by default beside the model, where `--kv-policy duo` finds it.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <numeric>

#include "commands.h"
#include "common.h"
#include "eval/head_calibration.h"

namespace longhaul::cli {
namespace {

struct CalibrateFlags {
  ModelFlags model;
  std::string output;
  eval::CalibrationOptions options;
  int32_t top = 10;
};

int run(const CalibrateFlags& f) {
  eval::CalibrationOptions options = f.options;
  options.n_threads = cap_threads(options.n_threads);
  std::string out;
  Result<kv::HeadProfile> profile = calibrate_into_profile(
      f.model, f.output,
      [&](const LoadedModel& loaded, const std::function<void(const std::string&)>& progress) {
        return eval::calibrate_heads(*loaded.model, *loaded.tokenizer, options, progress);
      },
      out);
  if (!profile) return report_error(profile.message());

  // The best-scored heads, so the user sees what duo will keep.
  const kv::HeadProfile& p = *profile;
  std::vector<int32_t> order(p.heads.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return p.heads[static_cast<size_t>(a)].score > p.heads[static_cast<size_t>(b)].score;
  });
  std::printf("| rank | layer | kv head | score | needle | induction | echo |\n");
  std::printf("| ---: | ----: | ------: | ----: | -----: | --------: | ---: |\n");
  for (int32_t i = 0; i < std::min<int32_t>(f.top, static_cast<int32_t>(order.size())); ++i) {
    const int32_t flat = order[static_cast<size_t>(i)];
    const kv::HeadScore& s = p.heads[static_cast<size_t>(flat)];
    std::printf("| %d | %d | %d | %.4f | %.4f | %.4f | %.4f |\n", i + 1, flat / p.n_head_kv, flat % p.n_head_kv,
                s.score, s.needle, s.induction, s.echo);
  }
  std::fprintf(stderr, "head profile of %d layers x %d KV heads written to %s\n", p.n_layer, p.n_head_kv, out.c_str());
  return 0;
}

}  // namespace

Runner add_calibrate_command(CLI::App& app) {
  auto flags = std::make_shared<CalibrateFlags>();
  CLI::App* cmd = app.add_subcommand(
      "calibrate-heads", "Score every KV head for the duo policy (needle, induction and echo attention mass)");
  add_model_flags(*cmd, flags->model);
  cmd->add_option("-o,--output", flags->output, "profile file (default: MODEL.gguf.heads beside the model)");
  auto& o = flags->options;
  cmd->add_option("--passkey-samples", o.passkey_samples, "passkey prompts")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000));
  cmd->add_option("--passkey-length", o.passkey_length, "tokens per passkey prompt")
      ->capture_default_str()
      ->check(CLI::Range(64, 1 << 20));
  cmd->add_option("--repeat-samples", o.repeat_samples, "repeated random sequences")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000));
  cmd->add_option("--repeat-tokens", o.repeat_tokens, "tokens of the sequence that is repeated")
      ->capture_default_str()
      ->check(CLI::Range(8, 1 << 16));
  cmd->add_option("--seed", o.seed, "seed of the keys and random tokens")->capture_default_str();
  cmd->add_option("--top", flags->top, "heads listed in the table")->capture_default_str()->check(CLI::Range(0, 1 << 20));
  add_threads_flag(*cmd, o.n_threads);
  return [flags]() { return run(*flags); };
}

}  // namespace longhaul::cli
