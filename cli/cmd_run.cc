// longhaul run: one prompt in, a streamed completion out.
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "base/sys_info.h"
#include "commands.h"
#include "common.h"
#include "eval/report.h"
#include "generate/batch.h"
#include "generate/generator.h"
#include "sampling/sampler_chain.h"

namespace longhaul::cli {
namespace {

struct RunFlags {
  ModelFlags model;
  SamplingFlags sampling;
  KvPolicyFlags kv;
  PrefillFlags prefill;  // --prefill-attn
  SpeculativeFlags speculative;
  PruneFlags prune;  // --prune-sublayers
  std::string prompt;
  std::string prompt_file;
  std::string system;
  int32_t n_predict = 128;  // -1 = until end of generation
  int32_t n_ctx = 4096;     // 0 = the model's training context
  int32_t n_batch = 512;
  int32_t n_threads = 0;    // 0 = all cores
  int32_t n_threads_batch = -1;  // llama.cpp's -tb: the thread count when -t is not given (-1 = not given)
  bool chat = false;
  bool json = false;
  bool special = false;
  bool ignore_eos = false;
  bool verbose = false;
};

// Prefill progress on a terminal, for prompts that take more than one step.
generate::ProgressFn make_progress(bool enabled) {
  if (!enabled) return nullptr;
  return [](int64_t done, int64_t total) {
    std::fprintf(stderr, "\rprefill %lld/%lld tokens", static_cast<long long>(done), static_cast<long long>(total));
    if (done == total) std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
    return true;
  };
}

int run(const RunFlags& f) {
  // Command-line errors first, before the model loads.
  if (!f.system.empty() && !f.chat)
    throw UsageError("--system needs --chat: a system message is part of the chat format");
  require_valid(sampling::validate(f.sampling.options));
  require_valid_speculative(f.speculative);
  const int32_t n_threads = threads_to_use(f.n_threads, f.n_threads_batch);
  Result<std::string> prompt = read_prompt(f.prompt, f.prompt_file, true);
  if (!prompt) return report_error(prompt.message());
  Result<GenerationModel> generation = load_generation_model(f.model.model, f.kv.policy, f.n_ctx, "the context (-c)");
  if (!generation) return report_error(generation.message());
  const LoadedModel* loaded = &generation->loaded;
  const tokenizer::Tokenizer& tok = *loaded->tokenizer;
  check_prune(*loaded->model, f.prune);
  Result<model::PrefillAttentionOptions> prepared =
      prepare_prefill_attention(*loaded->model, f.prefill, f.kv.head_profile, n_threads);
  if (!prepared) return report_error(prepared.message());
  const model::PrefillAttentionOptions prefill = std::move(prepared).value();

  // Chat mode wraps the prompt in the model's chat format: the format's markers are control tokens, the prompt and
  // system message stay user text. Plain prompts are user text too. --special lets control-token texts through.
  std::vector<int32_t> prompt_ids;
  if (f.chat) {
    note_if_not_instruction_tuned(*loaded->model);
    prompt_ids = encode_single_turn(*loaded, f.system, *prompt, f.special);
  } else {
    prompt_ids = tok.encode(*prompt, true, f.special);
  }
  if (prompt_ids.empty()) return report_error("the prompt tokenizes to no tokens; give a non-empty prompt");

  generate::SessionOptions so;
  so.n_ctx = generation->n_ctx;
  so.n_batch = f.n_batch;
  so.n_threads = n_threads;
  so.kv_policy = f.kv.policy;
  so.prefill_attn = prefill;
  Result<std::shared_ptr<const kv::HeadProfile>> head_profile =
      prepare_head_profile(*loaded->model, f.kv.policy, f.kv.head_profile, n_threads,
                           f.prune.n_pruned > 0 || speculative_needs_sublayers(f.speculative));
  if (!head_profile) return report_error(head_profile.message());
  so.head_profile = *head_profile;
  Result<model::SublayerSkip> pruned = pruned_sublayers(*loaded->model, f.prune, *head_profile);
  if (!pruned) return report_error(pruned.message());
  so.skip = std::move(pruned).value();
  Result<std::unique_ptr<generate::Session>> session = generate::Session::create(*loaded->model, so);
  if (!session) return report_error(session.message());
  Result<sampling::SamplerChain> sampler = sampling::SamplerChain::create(f.sampling.options);
  if (!sampler) return report_error(sampler.message());
  if (f.verbose) {
    std::fprintf(stderr, "sampler: %s\n", sampler->describe().c_str());
    std::fprintf(stderr, "threads: %d, context: %d, prompt tokens: %zu, KV policy: %s\n", (*session)->n_threads(),
                 (*session)->n_ctx(), prompt_ids.size(), (*session)->describe_kv().c_str());
  }

  LoadedModel draft;  // outlives the draft source in `go`
  if (Status st = load_draft_model(f.speculative, draft); !st) return report_error(st.message());
  generate::GenerateOptions go;
  go.n_predict = f.n_predict;
  go.ignore_eos = f.ignore_eos;
  if (Status st = set_draft_source(f.speculative,
                                   draft_source_inputs(*loaded, draft, &(*session)->engine().pool(), (*session)->n_ctx(),
                                                       *head_profile),
                                   go);
      !st)
    return report_error(st.message());
  generate::TextFn stream = nullptr;
  if (!f.json) {
    // A failed write (a full disk, a closed pipe) stops generating; main() reports it and exits 1.
    stream = [](std::string_view piece) {
      return std::fwrite(piece.data(), 1, piece.size(), stdout) == piece.size() && std::fflush(stdout) == 0;
    };
  }
  const bool show_progress = isatty(STDERR_FILENO) && static_cast<int32_t>(prompt_ids.size()) > f.n_batch;
  Result<generate::GenerateResult> result =
      generate::generate(**session, tok, *sampler, prompt_ids, go, stream, make_progress(show_progress));
  if (!result) return report_error(result.message());
  const generate::Timings& t = result->timings;

  if (f.json) {
    nlohmann::json j;
    j["prompt_tokens"] = prompt_ids;
    j["tokens"] = result->tokens;
    // Invalid UTF-8 (a cut-off multi-byte character) is replaced rather than rejected.
    j["text"] = result->text;
    j["stop"] = generate::stop_reason_name(result->stop);
    j["seed"] = sampler->seed();
    j["timings"] = {{"prompt_tokens", t.n_prompt},
                    {"prompt_seconds", t.prompt_seconds},
                    {"prompt_tokens_per_s", t.prompt_tokens_per_s()},
                    {"generated_tokens", t.n_generated},
                    {"generate_seconds", t.generate_seconds},
                    {"generate_tokens_per_s", t.generate_tokens_per_s()},
                    {"threads", (*session)->n_threads()},
                    {"kv_bytes", (*session)->cache().used_bytes()},
                    {"peak_rss_bytes", peak_rss_bytes()}};
    if (go.draft)
      j["speculative"] = nlohmann::json::parse(generate::speculative_stats_json(f.speculative.options.type, result->speculative));
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("\n");  // the completion ends with a newline, so the statistics never continue its last line
  }
  // The output is complete before the statistics start: with stdout and stderr on one file or pipe, they follow it.
  std::fflush(stdout);
  std::fprintf(stderr,
               "prompt: %d tokens in %.3f s (%.1f tokens/s) | generation: %d tokens in %.3f s (%.1f tokens/s) | "
               "stop: %s | KV %.1f MiB | peak RSS %.1f MiB%s\n",
               t.n_prompt, t.prompt_seconds, t.prompt_tokens_per_s(), t.n_generated, t.generate_seconds,
               t.generate_tokens_per_s(), generate::stop_reason_name(result->stop),
               static_cast<double>((*session)->cache().used_bytes()) / (1 << 20),
               static_cast<double>(peak_rss_bytes()) / (1 << 20),
               go.draft ? speculative_summary(f.speculative.options.type, result->speculative).c_str() : "");
  return 0;
}

}  // namespace

Runner add_run_command(CLI::App& app) {
  auto flags = std::make_shared<RunFlags>();
  CLI::App* cmd = app.add_subcommand("run", "Generate a completion of a prompt (streamed to stdout)");
  add_model_flags(*cmd, flags->model);
  cmd->add_option("-p,--prompt", flags->prompt, "prompt text");
  cmd->add_option("-f,--file", flags->prompt_file, "read the prompt from a file");
  cmd->add_option("-n,--n-predict", flags->n_predict, "tokens to generate (-1: until end of generation)")
      ->capture_default_str()
      ->check(CLI::Range(-1, 1 << 24));
  cmd->add_option("-c,--ctx-size", flags->n_ctx, "context size in tokens (0: the model's training context)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 24));
  cmd->add_option("-b,--batch-size", flags->n_batch, "prompt tokens per forward step")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  add_threads_flag(*cmd, flags->n_threads);
  add_threads_batch_flag(*cmd, flags->n_threads_batch);
  add_sampling_flags(*cmd, flags->sampling);
  add_kv_policy_flags(*cmd, flags->kv);
  add_prefill_flags(*cmd, flags->prefill);
  add_speculative_flags(*cmd, flags->speculative);
  add_prune_flags(*cmd, flags->prune);
  cmd->add_flag("--chat", flags->chat, "wrap the prompt in the model's chat format");
  cmd->add_option("--system", flags->system, "system message (needs --chat)");
  cmd->add_flag("--json", flags->json, "print one JSON object instead of streaming text");
  cmd->add_flag("--special", flags->special, "parse control-token text in the prompt as control tokens");
  cmd->add_flag("--ignore-eos", flags->ignore_eos, "keep generating past end-of-generation tokens");
  cmd->add_flag("-v,--verbose", flags->verbose, "print the sampler chain and settings");
  return [flags]() { return run(*flags); };
}

}  // namespace longhaul::cli
