#include "common.h"

#include <sched.h>
#include <unistd.h>

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <iterator>

#include "base/mapped_file.h"
#include "base/strings.h"
#include "base/sys_info.h"
#include "eval/head_calibration.h"
#include "eval/prefill_calibration.h"
#include "eval/report.h"
#include "eval/sublayer_calibration.h"
#include "generate/session.h"
#include "kv/policy_registry.h"

namespace longhaul::cli {

int report_error(const std::string& message) {
  std::fflush(stdout);
  std::fprintf(stderr, "longhaul: error: %s\n", message.c_str());
  return kExitError;
}

void warn(const std::string& message) {
  std::fflush(stdout);
  std::fprintf(stderr, "longhaul: warning: %s\n", message.c_str());
}

void require_valid(const Status& status) {
  if (!status) throw UsageError(status.message());
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
  app.add_option("--kv-policy", flags.policy,
                 "KV-cache policy with its parameters, NAME or NAME:KEY=VALUE:... (see the list below)")
      ->capture_default_str();
  // Rewritten into each policy's top_p=P before parsing (translate_llama_cpp_flags), so it holds no value here:
  // it is listed for --help.
  app.add_option("--kv-top-p", CLI::callback_t{},
                 "Twilight top-p page budget for a policy that selects pages (quest, lserve, hip, recycled): of the "
                 "pages its budget selects, read the best until their estimated attention reaches P, in (0, 1]",
                 false)
      ->type_name("P");
  // --kv-budget and --kv-bits likewise, into budget=N and bits=N (bits as llama.cpp's -ctk/-ctv are).
  app.add_option("--kv-budget", CLI::callback_t{},
                 "token budget of every policy given, the same as :budget=N on each --kv-policy: the cells an "
                 "evicting policy keeps, or the tokens of pages a selecting policy reads per decode query (each "
                 "policy's budget= below; eval also takes P%, a share of each length)",
                 false)
      ->type_name("N");
  app.add_option("--kv-bits", CLI::callback_t{},
                 "bits per stored KV cell for every policy given (or for full): 16 (f16, the default), 8 or 4 "
                 "(KIVI int8 / int4, past the most recent residual=R cells); the same as :bits=N on "
                 "each --kv-policy",
                 false)
      ->type_name("16|8|4");
  app.add_option("--head-profile", flags.head_profile,
                 "duo, lserve, --prefill-attn minference and moa: head profile from `longhaul calibrate-heads` and "
                 "`calibrate-prefill` (default: the one saved beside the model, computed on first use)");
  app.footer(kv::kv_policy_help());
}

void add_prefill_flags(CLI::App& app, PrefillFlags& flags) {
  // The value is checked while the flags are parsed (exit 2 before the model loads), by the parser that
  // prefill_attention() then reads it with.
  app.add_option("--prefill-attn", flags.spec, model::prefill_attention_help())
      ->capture_default_str()
      ->check([](const std::string& value) {
        Result<model::PrefillAttentionOptions> parsed = model::parse_prefill_attention(value);
        return parsed ? std::string() : parsed.message();
      });
}

model::PrefillAttentionOptions prefill_attention(const PrefillFlags& flags) {
  return require_valid(model::parse_prefill_attention(flags.spec));
}

void add_speculative_flags(CLI::App& app, SpeculativeFlags& flags, bool type_list) {
  auto& o = flags.options;
  std::string names;
  for (const std::string& n : generate::speculative::draft_source_names()) names += (names.empty() ? "" : ", ") + n;
  const std::string what =
      std::string(type_list ? "draft sources to measure, comma list, each against plain decoding: "
                            : "speculative decoding's draft source: ") +
      names +
      " (ngram: prompt lookup; recycle: Token Recycling; aded: adaptive tri-gram table; retrieval: longest-suffix "
      "matches in the text and --spec-corpus; draft: a draft model, -md; self: the model with sub-layers skipped); "
      "output is unchanged";
  CLI::Option* type = app.add_option("--spec-type", o.type, what)->capture_default_str();
  if (type_list) {
    type->check(CLI::Validator(
        [names](std::string& list) -> std::string {
          const std::vector<std::string> known = generate::speculative::draft_source_names();
          for (const std::string& t : split(list, ','))
            if (std::find(known.begin(), known.end(), t) == known.end())
              return "unknown draft source '" + t + "' (" + names + ")";
          return std::string();
        },
        "SOURCE[,SOURCE...]"));
  } else {
    type->check(CLI::IsMember(generate::speculative::draft_source_names()));
  }
  app.add_option("--draft-max", o.draft_max, "most draft tokens (tree nodes) verified per step")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("--draft-min", o.draft_min, "shorter drafts are not verified (0: any)")
      ->capture_default_str()
      ->check(CLI::Range(0, 256));
  app.add_flag_callback(
      "--draft-fixed", [&o] { o.adaptive = false; },
      "draft up to --draft-max tokens every step (default: each step drafts the length with the most expected tokens "
      "per second, from the acceptance and step cost measured while decoding)");
  app.add_option("--spec-corpus", o.corpus,
                 "retrieval: a text file whose continuations are drafted too (tokenized and indexed once)");
  app.add_option("--model-draft", o.draft_model,
                 "(-md) draft: the draft model (GGUF or short name) with the target's tokenizer");
  app.add_option("--draft-p-min", o.draft_p_min,
                 "draft, self: the draft stops drafting below this top probability (BiLD's fallback; 0: never)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--draft-skip", o.draft_skip,
                 "self: sub-layers the draft leaves out, the first N of the head profile's calibrated order (default: "
                 "the most whose top token agrees with the whole model's on 80% of the calibration tokens)")
      ->check(CLI::Range(0, 2 * kv::kMaxProfileLayers));
}

std::vector<std::string> speculative_types(const SpeculativeFlags& flags) {
  std::vector<std::string> types = split(flags.options.type, ',');
  if (types.empty()) types.push_back("none");
  return types;
}

bool speculative_needs_sublayers(const SpeculativeFlags& flags) {
  const std::vector<std::string> types = speculative_types(flags);
  return std::find(types.begin(), types.end(), "self") != types.end();
}

SpeculativeFlags with_speculative_type(const SpeculativeFlags& flags, const std::string& type) {
  SpeculativeFlags one = flags;
  one.options.type = type;
  return one;
}

void add_prune_flags(CLI::App& app, PruneFlags& flags) {
  app.add_option("--prune-sublayers", flags.n_pruned,
                 "run without the first N sub-layers (attention or FFN) of the model's calibrated removal order "
                 "(FinerCut; computed beside the model on first use): faster, less accurate (0: the whole model)")
      ->capture_default_str()
      ->check(CLI::Range(0, 2 * kv::kMaxProfileLayers));
}

void check_prune(const model::Model& model, const PruneFlags& flags) {
  const int32_t n_sublayers = 2 * model.config().n_layer;
  if (flags.n_pruned >= n_sublayers)
    throw UsageError("--prune-sublayers " + std::to_string(flags.n_pruned) + " must be below the model's " +
                     std::to_string(n_sublayers) + " sub-layers (" + std::to_string(model.config().n_layer) +
                     " layers x attention, FFN)");
}

Result<model::SublayerSkip> pruned_sublayers(const model::Model& model, const PruneFlags& flags,
                                             const std::shared_ptr<const kv::HeadProfile>& profile) {
  if (flags.n_pruned == 0) return model::SublayerSkip();
  LH_CHECK(profile != nullptr);
  return model::calibrated_sublayer_skip(*profile, flags.n_pruned, model.config().n_layer,
                                         "--prune-sublayers " + std::to_string(flags.n_pruned));
}

void require_valid_speculative(const SpeculativeFlags& flags) {
  const auto& o = flags.options;
  const std::vector<std::string> types = speculative_types(flags);
  for (const std::string& type : types)
    require_valid(generate::speculative::validate(with_speculative_type(flags, type).options));
  auto named = [&](const char* type) { return std::find(types.begin(), types.end(), type) != types.end(); };
  if (!o.corpus.empty() && !named("retrieval"))
    throw UsageError("--spec-corpus is read by --spec-type retrieval only (--spec-type is " + o.type + ")");
  if (!o.draft_model.empty() && !named("draft"))
    throw UsageError("-md is read by --spec-type draft only (--spec-type is " + o.type + ")");
  if (o.draft_skip >= 0 && !named("self"))
    throw UsageError("--draft-skip is read by --spec-type self only (--spec-type is " + o.type + ")");
}

Status load_draft_model(const SpeculativeFlags& flags, LoadedModel& draft) {
  if (flags.options.draft_model.empty()) return Status::ok();
  Result<LoadedModel> loaded = load_model(flags.options.draft_model);
  if (!loaded) return Status::error("draft model (-md): " + loaded.message());
  draft = std::move(loaded).value();
  return Status::ok();
}

generate::speculative::DraftSourceInputs draft_source_inputs(const LoadedModel& target, const LoadedModel& draft,
                                                             ThreadPool* pool, int32_t n_ctx,
                                                             std::shared_ptr<const kv::HeadProfile> head_profile) {
  generate::speculative::DraftSourceInputs in;
  in.model = target.model.get();
  in.head_profile = std::move(head_profile);
  in.n_vocab = target.model->config().n_vocab;
  in.tokenizer = target.tokenizer.get();
  in.draft_model = draft.model.get();
  in.draft_tokenizer = draft.tokenizer.get();
  in.pool = pool;
  in.n_ctx = n_ctx;
  return in;
}

Status set_draft_source(const SpeculativeFlags& flags, const generate::speculative::DraftSourceInputs& inputs,
                        generate::GenerateOptions& options) {
  LH_ASSIGN_OR_RETURN(options.draft, generate::speculative::make_draft_source(flags.options, inputs));
  options.draft_max = flags.options.draft_max;
  options.draft_min = flags.options.draft_min;
  options.draft_adaptive = flags.options.adaptive;
  return Status::ok();
}

std::string speculative_summary(const std::string& type, const generate::SpeculativeStats& stats) {
  char line[160];
  std::snprintf(line, sizeof line, " | spec %s: %lld/%lld drafted tokens accepted in %lld steps, %.2f tokens/step",
                type.c_str(), static_cast<long long>(stats.n_accepted), static_cast<long long>(stats.n_drafted),
                static_cast<long long>(stats.n_steps), stats.mean_accepted_length());
  return line;
}

namespace {
bool file_exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

std::string dir_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}
}  // namespace

namespace {
// Copies the prefill section (and n_head, its shape) of `from` into `to`.
void copy_prefill_section(const kv::HeadProfile& from, kv::HeadProfile& to) {
  to.n_head = from.n_head;
  to.prefill = from.prefill;
  to.prefill_tokens = from.prefill_tokens;
  to.prefill_budget = from.prefill_budget;
  to.prefill_density = from.prefill_density;
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

void keep_other_sections(const std::string& path, kv::HeadProfile& profile) {
  if (!file_exists(path)) return;
  Result<kv::HeadProfile> old = kv::load_head_profile(path);
  if (!old || old->n_layer != profile.n_layer || old->n_head_kv != profile.n_head_kv) return;
  if (!profile.has_head_scores()) profile.heads = std::move(old->heads);
  if (profile.sublayer_order.empty()) {
    profile.sublayer_order = std::move(old->sublayer_order);
    profile.sublayer_tokens = old->sublayer_tokens;
  }
  if (!profile.has_prefill() && old->has_prefill()) copy_prefill_section(*old, profile);
}

Result<kv::HeadProfile> calibrate_into_profile(const ModelFlags& model, const std::string& output,
                                               const CalibrateFn& calibrate, std::string& out) {
  // The output path is checked before calibrating, which takes minutes.
  if (!output.empty()) require_writable_path(output, "-o");
  LH_ASSIGN_OR_RETURN(const std::string path, resolve_model_path(model.model));
  LH_ASSIGN_OR_RETURN(const LoadedModel loaded, load_model(path));
  out = output.empty() ? default_head_profile_path(path) : output;
  Result<kv::HeadProfile> profile = calibrate(loaded, status_line_printer());
  clear_status_line();
  if (!profile) return profile;
  keep_other_sections(out, *profile);
  LH_RETURN_IF_ERROR(kv::save_head_profile(*profile, out));
  return profile;
}

Result<model::PrefillAttentionOptions> prepare_prefill_attention(const model::Model& model, const PrefillFlags& flags,
                                                                 const std::string& head_profile_path,
                                                                 int32_t n_threads) {
  model::PrefillAttentionOptions options = prefill_attention(flags);
  if (options.mode == model::PrefillAttention::kDense) return options;
  const std::string& model_path = model.file().path();
  const std::string model_name = model_path.substr(model_path.find_last_of('/') + 1);
  const std::string file = head_profile_path.empty() ? default_head_profile_path(model_path) : head_profile_path;
  kv::HeadProfile profile;
  const bool exists = !head_profile_path.empty() || file_exists(file);
  if (exists) {
    LH_ASSIGN_OR_RETURN(profile, kv::load_head_profile(file));
  }
  // Only the profile saved beside the model is computed or completed here; one the user names is used as it is.
  const bool other_density = options.mode == model::PrefillAttention::kMoA && profile.has_prefill() &&
                             std::abs(profile.prefill_density - options.density) > 1e-4f;
  if (head_profile_path.empty() && (!profile.has_prefill() || other_density)) {
    const model::ModelConfig& cfg = model.config();
    if (exists && (profile.n_layer != cfg.n_layer || profile.n_head_kv != cfg.n_head_kv))
      return Status::error("the head profile '" + file + "' is for " + std::to_string(profile.n_layer) + " layers x " +
                           std::to_string(profile.n_head_kv) + " KV heads (" + profile.model + "), the model has " +
                           std::to_string(cfg.n_layer) + " x " + std::to_string(cfg.n_head_kv) +
                           ": remove it to have it computed again");
    std::fprintf(stderr, "no prefill section %s in the head profile yet; computing it into %s (once)\n",
                 other_density ? "for this density" : "for this model", file.c_str());
    LH_ASSIGN_OR_RETURN(tokenizer::Tokenizer tok, tokenizer::Tokenizer::from_gguf(model.file()));
    eval::PrefillCalibrationOptions co;
    co.n_threads = n_threads;
    co.density = options.density;
    LH_ASSIGN_OR_RETURN(kv::HeadProfile computed, eval::calibrate_prefill(model, tok, co, status_line_printer()));
    clear_status_line();
    if (exists) {
      computed.heads = std::move(profile.heads);
      computed.sublayer_order = std::move(profile.sublayer_order);
      computed.sublayer_tokens = profile.sublayer_tokens;
    }
    profile = std::move(computed);
    if (file.find("/.cache/longhaul/heads/") != std::string::npos) ::mkdir(dir_of(file).c_str(), 0755);
    LH_RETURN_IF_ERROR(kv::save_head_profile(profile, file));
  }
  profile.source = file;
  options.profile = std::make_shared<kv::HeadProfile>(std::move(profile));
  LH_RETURN_IF_ERROR(model::check_prefill_profile(options, model.config(), model_name));
  return options;
}

std::function<void(const std::string&)> status_line_printer() {
  const bool tty = isatty(STDERR_FILENO) != 0;
  // In a log, one line per update would be dozens of lines for a 2K perplexity run: print the first update and
  // then at most one line per kLogInterval seconds.
  constexpr double kLogInterval = 10.0;
  auto last_printed = std::make_shared<double>(-kLogInterval);
  return [tty, last_printed](const std::string& line) {
    if (tty) {
      std::fprintf(stderr, "\r\033[K%s", line.c_str());
    } else {
      const double now = now_seconds();
      if (now - *last_printed < kLogInterval) return;
      *last_printed = now;
      std::fprintf(stderr, "%s\n", line.c_str());
    }
    std::fflush(stderr);
  };
}

void clear_status_line() {
  if (isatty(STDERR_FILENO) != 0) std::fprintf(stderr, "\r\033[K");
}

Result<std::shared_ptr<const kv::HeadProfile>> prepare_head_profile(const model::Model& model,
                                                                    const std::string& policy_list,
                                                                    const std::string& path, int32_t n_threads,
                                                                    bool needs_sublayers) {
  // A list that does not parse is reported by the command that uses it.
  Result<std::vector<eval::PolicySpec>> specs = eval::parse_policy_list(policy_list);
  const bool needs_heads = specs && std::any_of(specs->begin(), specs->end(), [](const eval::PolicySpec& p) {
                             return kv::kv_policy_uses_head_profile(p.name);
                           });
  if (!needs_heads && !needs_sublayers) return std::shared_ptr<const kv::HeadProfile>();
  const std::string file = path.empty() ? default_head_profile_path(model.file().path()) : path;
  kv::HeadProfile profile;
  const bool exists = !path.empty() || file_exists(file);
  if (exists) {
    LH_ASSIGN_OR_RETURN(profile, kv::load_head_profile(file));
  }
  // Only the profile saved beside the model is computed or completed here; one the user names is used as it is
  // (the policy or the flag that reads a missing section says so).
  const bool compute_heads = path.empty() && needs_heads && !profile.has_head_scores();
  const bool compute_sublayers = path.empty() && needs_sublayers && profile.sublayer_order.empty();
  if (!compute_heads && !compute_sublayers)
    return std::shared_ptr<const kv::HeadProfile>(std::make_shared<kv::HeadProfile>(std::move(profile)));
  const kv::KvShape shape = model.kv_shape();
  if (exists && (profile.n_layer != shape.n_layer || profile.n_head_kv != shape.n_head_kv))
    return Status::error("the head profile '" + file + "' is for " + std::to_string(profile.n_layer) + " layers x " +
                         std::to_string(profile.n_head_kv) + " KV heads (" + profile.model + "), the model has " +
                         std::to_string(shape.n_layer) + " x " + std::to_string(shape.n_head_kv) +
                         ": remove it to have it computed again");
  LH_ASSIGN_OR_RETURN(tokenizer::Tokenizer tok, tokenizer::Tokenizer::from_gguf(model.file()));
  if (compute_heads) {
    std::fprintf(stderr, "no head scores for this model yet; computing them into %s (once)\n", file.c_str());
    eval::CalibrationOptions co;
    co.n_threads = n_threads;
    LH_ASSIGN_OR_RETURN(kv::HeadProfile heads, eval::calibrate_heads(model, tok, co, status_line_printer()));
    clear_status_line();
    heads.sublayer_order = std::move(profile.sublayer_order);
    heads.sublayer_tokens = profile.sublayer_tokens;
    if (profile.has_prefill()) copy_prefill_section(profile, heads);
    profile = std::move(heads);
  }
  if (compute_sublayers) {
    std::fprintf(stderr, "no sub-layer order for this model yet; computing it into %s (once)\n", file.c_str());
    eval::SublayerCalibrationOptions so;
    so.n_threads = n_threads;
    LH_RETURN_IF_ERROR(eval::calibrate_sublayer_order(model, tok, so, status_line_printer(), profile));
    clear_status_line();
  }
  if (file.find("/.cache/longhaul/heads/") != std::string::npos) ::mkdir(dir_of(file).c_str(), 0755);
  LH_RETURN_IF_ERROR(kv::save_head_profile(profile, file));
  profile.source = file;
  return std::shared_ptr<const kv::HeadProfile>(std::make_shared<kv::HeadProfile>(std::move(profile)));
}

Result<std::string> read_stdin() {
  std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  if (std::cin.bad()) return Status::error(std::string("cannot read standard input: ") + std::strerror(errno));
  return text;
}

Result<std::string> read_input_file(const std::string& path) {
  if (path == "-") return read_stdin();
  return read_text_file(path);
}

Result<std::string> read_prompt(const std::string& prompt, const std::string& file, bool required) {
  if (!prompt.empty() && !file.empty()) throw UsageError("give the prompt with -p or -f, not both");
  if (!file.empty()) return read_input_file(file);
  if (prompt.empty() && required) throw UsageError("no prompt: give one with -p TEXT or -f FILE (-f - reads standard input)");
  return prompt;
}

int32_t available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1, static_cast<int32_t>(sysconf(_SC_NPROCESSORS_ONLN)));
}

int32_t cap_threads(int32_t requested) {
  const int32_t n_cores = available_cores();
  if (requested <= n_cores) return requested;
  warn("-t " + std::to_string(requested) + " is more threads than the " + std::to_string(n_cores) +
       " cores this process may use; using " + std::to_string(n_cores));
  return n_cores;
}

void add_threads_flag(CLI::App& app, int32_t& n_threads) {
  app.add_option("-t,--threads", n_threads, "threads (0: all cores; capped at the cores available)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
}

void add_threads_batch_flag(CLI::App& app, int32_t& n_threads_batch) {
  app.add_option("--threads-batch", n_threads_batch,
                 "(-tb) llama.cpp's prompt-processing threads: longhaul uses one thread count, this one when -t is not "
                 "given")
      ->check(CLI::Range(0, 1024));
}

int32_t threads_to_use(int32_t n_threads, int32_t n_threads_batch) {
  return cap_threads(n_threads > 0 || n_threads_batch < 0 ? n_threads : n_threads_batch);
}

void require_writable_path(const std::string& path, const std::string& flag) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) throw UsageError(flag + " '" + path + "' is a directory; give a file name");
    if (::access(path.c_str(), W_OK) != 0)
      throw UsageError(flag + " '" + path + "' cannot be written: " + std::strerror(errno));
    return;
  }
  const std::string dir = dir_of(path);
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw UsageError(flag + " '" + path + "': the directory '" + dir + "' does not exist");
  if (::access(dir.c_str(), W_OK) != 0)
    throw UsageError(flag + " '" + path + "': the directory '" + dir + "' is not writable");
}

void warn_past_training_context(const model::Model& model, int64_t n_tokens, const std::string& what) {
  const int64_t n_train = model.config().n_ctx_train;
  if (n_train > 0 && n_tokens > n_train)
    warn(what + " of " + std::to_string(n_tokens) + " tokens is past the model's training context of " +
         std::to_string(n_train) + " tokens; expect quality to fall");
}

std::vector<eval::PolicySpec> check_kv_policies(const model::Model& model, const std::string& policy_list,
                                                const std::vector<int32_t>& lengths) {
  std::vector<eval::PolicySpec> specs = require_valid(eval::parse_policy_list(policy_list));
  const kv::KvPolicyContext context = generate::kv_policy_context(
      model, std::make_shared<kv::HeadProfile>(kv::blank_head_profile(model.kv_shape().n_layer, model.kv_shape().n_head_kv)));
  for (const eval::PolicySpec& spec : specs) {
    // A budget given as a share of each length (eval's budget=P%) is built once per length, as eval runs it.
    std::vector<std::string> variants;
    if (spec.budget_fraction > 0 && lengths.empty())
      throw UsageError("budget=P% (in '" + policy_list + "') is a share of each eval length; this command takes budget=N cells");
    if (spec.budget_fraction > 0) {
      for (int32_t length : lengths) variants.push_back(spec.spec_for(length));
    } else {
      variants.push_back(spec.spec);
    }
    for (const std::string& built : variants) require_valid(kv::make_kv_policy(built, context));
  }
  return specs;
}

void check_kv_policy(const model::Model& model, const std::string& policy) {
  const std::vector<eval::PolicySpec> specs = check_kv_policies(model, policy);
  if (specs.size() != 1)
    throw UsageError("--kv-policy '" + policy + "' names " + std::to_string(specs.size()) +
                     " policies; this command runs one (a comma list is for eval)");
}

Result<GenerationModel> load_generation_model(const std::string& name_or_path, const std::string& kv_policy,
                                              int32_t n_ctx, const std::string& ctx_flag) {
  GenerationModel g;
  LH_ASSIGN_OR_RETURN(g.loaded, load_model(name_or_path));
  const model::Model& model = *g.loaded.model;
  check_kv_policy(model, kv_policy);
  g.n_ctx = n_ctx > 0 ? n_ctx : model.config().n_ctx_train;
  warn_past_training_context(model, g.n_ctx, ctx_flag);
  return g;
}

void note_if_not_instruction_tuned(const model::Model& model) {
  if (model.file().get_string("tokenizer.chat_template")) return;
  std::fflush(stdout);
  std::fprintf(stderr,
               "longhaul: note: %s has no chat template in its file: it is likely a base model, not instruction-tuned, "
               "and may only echo or continue the conversation (smollm2-135m, the default, is instruction-tuned)\n",
               model.config().name.c_str());
}

std::vector<int32_t> encode_single_turn(const LoadedModel& loaded, const std::string& system, const std::string& user,
                                        bool parse_special) {
  std::vector<tokenizer::ChatMessage> messages;
  if (!system.empty()) messages.push_back({"system", system});
  messages.push_back({"user", user});
  const tokenizer::ChatFormat format = tokenizer::detect_chat_format(loaded.model->file());
  return tokenizer::encode_chat(*loaded.tokenizer, format, messages, true, parse_special);
}

}  // namespace longhaul::cli
