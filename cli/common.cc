#include "common.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include <unistd.h>

#include <sys/stat.h>

#include "base/mapped_file.h"
#include "eval/head_calibration.h"
#include "eval/report.h"
#include "kv/policy_registry.h"

namespace longhaul::cli {

int report_error(const std::string& message) {
  std::fprintf(stderr, "longhaul: error: %s\n", message.c_str());
  return kExitError;
}

void add_model_flags(CLI::App& app, ModelFlags& flags) {
  app.add_option("-m,--model", flags.model,
                 "GGUF file, or a short name installed by scripts/setup.sh: smollm2-135m, gemma3-270m")
      ->capture_default_str();
}

namespace {
struct KnownModel {
  const char* short_name;
  const char* file_name;
};
constexpr KnownModel kKnownModels[] = {
    {"smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf"},
    {"gemma3-270m", "gemma-3-270m-q4_k_m.gguf"},
};

std::string models_dir() {
  if (const char* env = std::getenv("LONGHAUL_MODELS"); env != nullptr && *env != '\0') return env;
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : ".") + "/.cache/longhaul/models";
}
}  // namespace

Result<std::string> resolve_model_path(const std::string& name_or_path) {
  for (const auto& known : kKnownModels) {
    if (name_or_path != known.short_name) continue;
    const std::string path = models_dir() + "/" + known.file_name;
    if (std::FILE* f = std::fopen(path.c_str(), "rb")) {
      std::fclose(f);
      return path;
    }
    return Status::error("model '" + name_or_path + "' is not installed (expected " + path +
                         "); run scripts/setup.sh to install it");
  }
  return name_or_path;
}

Result<LoadedModel> load_model(const std::string& name_or_path) {
  LH_ASSIGN_OR_RETURN(const std::string path, resolve_model_path(name_or_path));
  LoadedModel loaded;
  LH_ASSIGN_OR_RETURN(loaded.model, model::Model::load(path));
  Result<tokenizer::Tokenizer> tok = tokenizer::Tokenizer::from_gguf(loaded.model->file());
  if (!tok) return Status::error(path + ": " + tok.message());
  loaded.tokenizer = std::make_unique<tokenizer::Tokenizer>(std::move(tok).value());
  if (loaded.tokenizer->n_vocab() != loaded.model->config().n_vocab)
    return Status::error(path + ": tokenizer has " + std::to_string(loaded.tokenizer->n_vocab()) +
                         " tokens but token_embd has " + std::to_string(loaded.model->config().n_vocab) + " rows");
  return loaded;
}

Result<LoadedModel> load_tokenizer(const std::string& name_or_path) { return load_model(name_or_path); }

void add_sampling_flags(CLI::App& app, SamplingFlags& flags) {
  auto& o = flags.options;
  app.add_option("--temp", o.temperature, "temperature (<= 0: greedy)")->capture_default_str();
  app.add_option("--top-k", o.top_k, "keep the k most likely tokens (0: off)")->capture_default_str();
  app.add_option("--top-p", o.top_p, "nucleus sampling mass in (0, 1] (1: off)")->capture_default_str();
  app.add_option("--min-p", o.min_p, "minimum probability relative to the top token (0: off)")->capture_default_str();
  app.add_option("--repeat-penalty", o.repeat_penalty, "penalty for recent tokens (1: off)")->capture_default_str();
  app.add_option("--frequency-penalty", o.frequency_penalty, "per-occurrence penalty (0: off)")->capture_default_str();
  app.add_option("--presence-penalty", o.presence_penalty, "presence penalty (0: off)")->capture_default_str();
  app.add_option("--repeat-last-n", o.penalty_last_n, "penalty window in tokens (0: off, -1: all)")
      ->capture_default_str();
  app.add_option("-s,--seed", o.seed, "RNG seed (4294967295: random)")->capture_default_str();
}

void add_kv_policy_flags(CLI::App& app, KvPolicyFlags& flags) {
  auto& o = flags.options;
  std::string names;
  for (const std::string& n : kv::kv_policy_names()) names += (names.empty() ? "" : ", ") + n;
  app.add_option("--kv-policy", flags.policy, "KV-cache policy: " + names)
      ->capture_default_str();
  app.add_option("--kv-budget", o.budget, "cells kept per layer by h2o, a2sf, tova, snapkv (0: 1024)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 24));
  app.add_option("--sink", o.sink_tokens, "streaming, duo: attention-sink tokens kept (0: none)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  app.add_option("--window", o.window, "streaming: recent tokens kept (0: 1020); duo: streaming heads' window (0: 512)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 24));
  app.add_option("--recent", o.recent, "h2o, a2sf: recent tokens always kept, within the budget (0: budget/2)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 24));
  app.add_option("--forgetting", o.forgetting_factor, "a2sf: decay of accumulated attention per token (0: 0.9)")
      ->capture_default_str()
      ->check(CLI::Range(0.0f, 1.0f));
  app.add_option("--obs-window", o.observation_window, "snapkv: last prompt tokens whose attention votes")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  app.add_option("--pool-kernel", o.pool_kernel, "snapkv: width of the vote pooling (1: off)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1025));
  app.add_option_function<std::string>(
         "--kv-select",
         [&o](const std::string& v) { o.select_per_head = v == "head"; },
         "snapkv, h2o, a2sf: each KV head keeps its own cells (head, the papers' rule) or every head of a layer the "
         "same ones (layer)")
      ->default_str("head")
      ->check(CLI::IsMember({"head", "layer"}));
  app.add_option("--head-profile", o.head_profile,
                 "duo: head profile from `longhaul calibrate-heads` (default: the one saved beside the model, "
                 "computed on first use)");
  app.add_option("--retrieval-heads", o.retrieval_fraction,
                 "duo: share of the global layers' KV heads that keep every token, in [0, 1]")
      ->capture_default_str()
      ->check(CLI::Range(0.0f, 1.0f));
  // KIVI (Liu et al., 2024) cell storage, for every policy; the paper's G = 32 and R = 128 are the defaults.
  app.add_option("--kv-bits", o.kv_bits,
                 "KV cells older than the residual: 16 (f16), 8 or 4 (KIVI int8/int4) (0: 16, kv-quant: 8)")
      ->capture_default_str()
      ->check(CLI::IsMember({0, 16, 8, 4}));
  app.add_option("--kv-group", o.kv_group, "quantized KV: tokens whose keys share a scale per channel (G)")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--kv-residual", o.kv_residual, "quantized KV: most recent tokens kept f16 (R)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 24));
}

namespace {
bool file_exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

std::string dir_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}
}  // namespace

std::string default_head_profile_path(const std::string& model_path) {
  const std::string beside = model_path + ".heads";
  const char* home = std::getenv("HOME");
  const size_t slash = model_path.find_last_of('/');
  const std::string cache_dir = std::string(home != nullptr ? home : ".") + "/.cache/longhaul/heads";
  const std::string cached = cache_dir + "/" + (slash == std::string::npos ? model_path : model_path.substr(slash + 1)) +
                             ".heads";
  if (file_exists(beside)) return beside;
  if (file_exists(cached)) return cached;
  if (::access(dir_of(model_path).c_str(), W_OK) == 0) return beside;
  return cached;
}

std::function<void(const std::string&)> status_line_printer() {
  const bool tty = isatty(STDERR_FILENO) != 0;
  return [tty](const std::string& line) {
    std::fprintf(stderr, tty ? "\r\033[K%s" : "%s\n", line.c_str());
    std::fflush(stderr);
  };
}

void clear_status_line() {
  if (isatty(STDERR_FILENO) != 0) std::fprintf(stderr, "\r\033[K");
}

Status prepare_head_profile(const model::Model& model, const std::string& policy_list, kv::KvPolicyOptions& options,
                            int32_t n_threads) {
  if (!options.head_profile.empty()) return Status::ok();
  // A list that does not parse is reported by the command that uses it.
  Result<std::vector<eval::PolicySpec>> specs = eval::parse_policy_list(policy_list, options);
  if (!specs || std::none_of(specs->begin(), specs->end(), [](const eval::PolicySpec& p) { return p.name == "duo"; }))
    return Status::ok();
  const std::string path = default_head_profile_path(model.file().path());
  options.head_profile = path;
  if (file_exists(path)) return Status::ok();
  std::fprintf(stderr, "duo: no head profile for this model yet; computing %s (once)\n", path.c_str());
  LH_ASSIGN_OR_RETURN(tokenizer::Tokenizer tok, tokenizer::Tokenizer::from_gguf(model.file()));
  eval::CalibrationOptions co;
  co.n_threads = n_threads;
  LH_ASSIGN_OR_RETURN(kv::HeadProfile profile, eval::calibrate_heads(model, tok, co, status_line_printer()));
  clear_status_line();
  if (path.find("/.cache/longhaul/heads/") != std::string::npos) ::mkdir(dir_of(path).c_str(), 0755);
  return kv::save_head_profile(profile, path);
}

Result<std::string> read_prompt(const std::string& prompt, const std::string& file, bool required) {
  if (!prompt.empty() && !file.empty()) return Status::error("give the prompt with -p or -f, not both");
  if (!file.empty()) return read_text_file(file);
  if (prompt.empty() && required) return Status::error("no prompt: give one with -p TEXT or -f FILE");
  return prompt;
}

std::string format_single_turn(const LoadedModel& loaded, const std::string& system, const std::string& user) {
  std::vector<tokenizer::ChatMessage> messages;
  if (!system.empty()) messages.push_back({"system", system});
  messages.push_back({"user", user});
  const tokenizer::ChatFormat format = tokenizer::detect_chat_format(loaded.model->file());
  return tokenizer::format_chat(format, messages, true);
}

}  // namespace longhaul::cli
