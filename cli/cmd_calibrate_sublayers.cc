// longhaul calibrate-sublayers: FinerCut's greedy sub-layer removal order (eval/sublayer_calibration.h), written
// into the head profile, by default beside the model, where --spec-type self and --prune-sublayers find it.
#include <cstdio>
#include <memory>

#include "commands.h"
#include "common.h"
#include "eval/sublayer_calibration.h"

namespace longhaul::cli {
namespace {

struct CalibrateSublayersFlags {
  ModelFlags model;
  std::string output;
  eval::SublayerCalibrationOptions options;
};

int run(const CalibrateSublayersFlags& f) {
  // The output path is checked before calibrating, which takes minutes.
  if (!f.output.empty()) require_writable_path(f.output, "-o");
  eval::SublayerCalibrationOptions options = f.options;
  options.n_threads = cap_threads(options.n_threads);
  Result<std::string> path = resolve_model_path(f.model.model);
  if (!path) return report_error(path.message());
  Result<LoadedModel> loaded = load_model(*path);
  if (!loaded) return report_error(loaded.message());
  const int32_t n_sublayers = 2 * loaded->model->config().n_layer;
  if (options.n_ranked > n_sublayers)
    throw UsageError("--ranked " + std::to_string(options.n_ranked) + " is more than the model's " +
                     std::to_string(n_sublayers) + " sub-layers");
  const std::string out = f.output.empty() ? default_head_profile_path(*path) : f.output;
  kv::HeadProfile profile;
  profile.n_layer = loaded->model->kv_shape().n_layer;
  profile.n_head_kv = loaded->model->kv_shape().n_head_kv;
  Status st = eval::calibrate_sublayer_order(*loaded->model, *loaded->tokenizer, options, status_line_printer(), profile);
  clear_status_line();
  if (!st) return report_error(st.message());
  keep_other_sections(out, profile);
  if (Status s = kv::save_head_profile(profile, out); !s) return report_error(s.message());

  std::printf("| rank | removed | KL (nats) | top-token agreement |\n");
  std::printf("| ---: | ------- | --------: | ------------------: |\n");
  for (size_t i = 0; i < profile.sublayer_order.size(); ++i) {
    const kv::SublayerRemoval& r = profile.sublayer_order[i];
    std::printf("| %zu | %s | %.4f | %.3f |\n", i + 1, kv::sublayer_name(r.sublayer).c_str(), r.kl, r.agreement);
  }
  std::fprintf(stderr, "sub-layer order (%zu of %d, %d calibration tokens) written to %s\n",
               profile.sublayer_order.size(), n_sublayers, profile.sublayer_tokens, out.c_str());
  return 0;
}

}  // namespace

Runner add_calibrate_sublayers_command(CLI::App& app) {
  auto flags = std::make_shared<CalibrateSublayersFlags>();
  CLI::App* cmd = app.add_subcommand(
      "calibrate-sublayers",
      "Rank the attention and FFN sub-layers by how little removing them changes the output (FinerCut), for "
      "--spec-type self and --prune-sublayers");
  add_model_flags(*cmd, flags->model);
  cmd->add_option("-o,--output", flags->output, "profile file (default: MODEL.gguf.heads beside the model)");
  auto& o = flags->options;
  cmd->add_option("--tokens", o.n_tokens, "calibration tokens (the tail of the default eval text)")
      ->capture_default_str()
      ->check(CLI::Range(2, 1 << 16));
  cmd->add_option("--ranked", o.n_ranked, "sub-layers to rank (0: a quarter of them)")
      ->capture_default_str()
      ->check(CLI::Range(0, 2 * kv::kMaxProfileLayers));
  add_threads_flag(*cmd, o.n_threads);
  return [flags]() { return run(*flags); };
}

}  // namespace longhaul::cli
