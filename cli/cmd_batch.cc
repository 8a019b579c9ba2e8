// longhaul batch: offline batch inference over a JSONL file of prompts (src/generate/batch.h says the format).
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "base/sys_info.h"
#include "commands.h"
#include "common.h"
#include "generate/batch.h"
#include "kv/policy_registry.h"
#include "tokenizer/chat_format.h"

namespace longhaul::cli {
namespace {

struct BatchFlags {
  ModelFlags model;
  SamplingFlags sampling;
  KvPolicyFlags kv;
  PrefillFlags prefill;  // --prefill-attn
  SpeculativeFlags speculative;
  std::string input;            // -f
  std::string output = "-";     // -o ("-" = stdout)
  int32_t parallel = 8;         // sequences at once
  int32_t n_predict = 128;      // -1 = until end of generation
  int32_t n_ctx = 4096;         // per sequence; 0 = the model's training context
  int32_t n_batch = 512;        // tokens per step
  int32_t n_threads = 0;        // 0 = all cores
  bool ignore_eos = false;
  bool prefix_cache = false;    // --prefix-cache: requests share the KV pages of common prompt starts
};

int run(const BatchFlags& f) {
  // Command-line errors first, before the model loads.
  require_valid(sampling::validate(f.sampling.options));
  require_valid(generate::speculative::validate(f.speculative.options));
  if (f.output != "-") require_writable_path(f.output, "-o/--output");
  const int32_t n_threads = cap_threads(f.n_threads);
  Result<std::string> text = read_input_file(f.input);
  if (!text) return report_error(text.message());
  Result<std::vector<generate::BatchLine>> lines = generate::parse_batch_lines(*text);
  if (!lines) return report_error(f.input + ": " + lines.message());

  Result<GenerationModel> generation = load_generation_model(f.model.model, f.kv.policy, f.n_ctx, "-c/--ctx-size");
  if (!generation) return report_error(generation.message());
  const LoadedModel* loaded = &generation->loaded;
  const model::Model& model = *loaded->model;
  const int32_t n_ctx = generation->n_ctx;
  Result<model::PrefillAttentionOptions> prepared =
      prepare_prefill_attention(*loaded->model, f.prefill, f.kv.head_profile, n_threads);
  if (!prepared) return report_error(prepared.message());
  const model::PrefillAttentionOptions prefill = std::move(prepared).value();

  generate::BatchDefaults defaults;
  defaults.sampling = f.sampling.options;
  defaults.n_predict = f.n_predict;
  defaults.ignore_eos = f.ignore_eos;
  defaults.kv_policy = f.kv.policy;
  defaults.prefill_attn = prefill;
  defaults.n_ctx = n_ctx;
  defaults.speculative = f.speculative.options;
  // The engine first: a draft model's engine shares its pool.
  generate::EngineOptions eo;
  eo.n_ctx = n_ctx;
  eo.n_batch = f.n_batch;
  eo.n_threads = n_threads;
  // The prefix cache's donor sequences (one per cached prompt path) take the places beyond the running requests.
  eo.max_sequences = f.prefix_cache ? 2 * f.parallel : f.parallel;
  Result<std::unique_ptr<generate::Engine>> engine = generate::Engine::create(model, eo);
  if (!engine) return report_error(engine.message());
  LoadedModel draft;  // outlives the jobs' draft sources
  if (Status st = load_draft_model(f.speculative, draft); !st) return report_error(st.message());
  // The head profile (the one beside the model, computed on first use) when the flag or any line names a policy
  // that reads it (duo, lserve), or asks for self-speculation (its sub-layer order).
  std::string profile_user;
  bool needs_sublayers = speculative_needs_sublayers(f.speculative);
  for (const generate::BatchLine& l : *lines) {
    if (l.kv_policy && kv::kv_policy_uses_head_profile(l.kv_policy->substr(0, l.kv_policy->find(':'))))
      profile_user = l.kv_policy->substr(0, l.kv_policy->find(':'));
    needs_sublayers = needs_sublayers || (l.spec_type && *l.spec_type == "self");
  }
  Result<std::shared_ptr<const kv::HeadProfile>> head_profile = prepare_head_profile(
      model, profile_user.empty() ? f.kv.policy : profile_user, f.kv.head_profile, n_threads, needs_sublayers);
  if (!head_profile) return report_error(head_profile.message());
  defaults.head_profile = *head_profile;
  defaults.draft_inputs = draft_source_inputs(*loaded, draft, &(*engine)->pool(), n_ctx, *head_profile);
  Result<std::vector<generate::BatchJob>> jobs = generate::prepare_batch(
      *lines, model, *loaded->tokenizer, tokenizer::detect_chat_format(model.file()), defaults);
  if (!jobs) return report_error(f.input + ": " + jobs.message());

  // Output: nothing is written before the whole file was validated (above).
  FILE* out = stdout;
  if (f.output != "-") {
    out = std::fopen(f.output.c_str(), "w");
    if (out == nullptr) return report_error("cannot write " + f.output + ": " + std::strerror(errno));
  }
  auto write = [&](const std::string& line) -> Status {
    if (std::fprintf(out, "%s\n", line.c_str()) < 0 || std::fflush(out) != 0)
      return Status::error("cannot write " + (f.output == "-" ? std::string("standard output") : f.output) + ": " +
                           std::strerror(errno));
    return Status::ok();
  };
  const bool terminal = isatty(STDERR_FILENO);
  double last_print = -1.0;
  auto progress = [&](size_t done, size_t total, int64_t generated, double seconds) {
    // One updating line on a terminal; in a log a line every 10 s and the last one.
    if (!terminal && done < total && seconds - last_print < 10.0) return;
    last_print = seconds;
    std::fprintf(stderr, "%sbatch: %zu/%zu done, %lld tokens generated, %.1f tokens/s%s", terminal ? "\r\033[K" : "",
                 done, total, static_cast<long long>(generated), seconds > 0 ? static_cast<double>(generated) / seconds : 0.0,
                 terminal ? "" : "\n");
    std::fflush(stderr);
  };
  const double t0 = now_seconds();
  int64_t n_generated = 0;
  auto counting_progress = [&](size_t done, size_t total, int64_t generated, double seconds) {
    n_generated = generated;
    progress(done, total, generated, seconds);
  };
  std::unique_ptr<generate::PrefixCache> prefix_cache;
  if (f.prefix_cache) prefix_cache = std::make_unique<generate::PrefixCache>(**engine);
  Status st = generate::run_batch(**engine, *loaded->tokenizer, *jobs, f.parallel, write, counting_progress,
                                  prefix_cache.get());
  if (prefix_cache != nullptr)
    std::fprintf(stderr, "batch: prefix cache: %lld of %lld requests reused a cached prefix, %lld prompt tokens not fed\n",
                 static_cast<long long>(prefix_cache->stats().n_hits),
                 static_cast<long long>(prefix_cache->stats().n_lookups),
                 static_cast<long long>(prefix_cache->stats().n_hit_tokens));
  if (out != stdout && std::fclose(out) != 0 && st)
    st = Status::error("cannot write " + f.output + ": " + std::strerror(errno));
  if (terminal) std::fprintf(stderr, "\n");
  if (!st) return report_error(st.message());
  const double seconds = now_seconds() - t0;
  std::fprintf(stderr,
               "batch: %zu requests, %lld tokens generated in %.2f s (%.1f tokens/s), parallel %d, %d threads | "
               "peak RSS %.1f MiB\n",
               jobs->size(), static_cast<long long>(n_generated), seconds, seconds > 0 ? n_generated / seconds : 0.0,
               f.parallel, (*engine)->n_threads(), static_cast<double>(peak_rss_bytes()) / (1 << 20));
  return 0;
}

}  // namespace

Runner add_batch_command(CLI::App& app) {
  auto flags = std::make_shared<BatchFlags>();
  CLI::App* cmd = app.add_subcommand(
      "batch", "Offline batch inference: one JSON request per line in, one JSON result per line out, in input order");
  add_model_flags(*cmd, flags->model);
  cmd->add_option("-f,--file", flags->input,
                  "JSONL requests: {\"prompt\": ...} or {\"messages\": [...]}, optional max_tokens, temperature, top_p, "
                  "seed, stop, kv_policy (- = standard input)")
      ->required();
  cmd->add_option("-o,--output", flags->output, "where results go (-: standard output)")->capture_default_str();
  cmd->add_option("--parallel", flags->parallel, "requests run at once (continuous batching)")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  cmd->add_option("-n,--n-predict", flags->n_predict, "tokens to generate per request unless it sets max_tokens (-1: until end of generation)")
      ->capture_default_str()
      ->check(CLI::Range(-1, 1 << 24));
  cmd->add_option("-c,--ctx-size", flags->n_ctx, "context size of each sequence in tokens (0: the model's training context)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 24));
  cmd->add_option("-b,--batch-size", flags->n_batch, "tokens per forward step (decode tokens and prefill chunks)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  add_threads_flag(*cmd, flags->n_threads);
  cmd->add_flag("--ignore-eos", flags->ignore_eos, "keep generating past end-of-generation tokens (throughput runs)");
  cmd->add_flag("--prefix-cache", flags->prefix_cache,
                "reuse the KV pages of earlier prompts' common starts, in whole pages (full policy and bits= only)");
  add_sampling_flags(*cmd, flags->sampling);
  add_kv_policy_flags(*cmd, flags->kv);
  add_prefill_flags(*cmd, flags->prefill);
  add_speculative_flags(*cmd, flags->speculative);
  return [flags]() { return run(*flags); };
}

}  // namespace longhaul::cli
