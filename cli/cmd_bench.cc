// longhaul bench: prompt-processing and generation throughput, test for test
// like llama.cpp's llama-bench (see src/generate/bench.h for what is measured).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/sys_info.h"
#include "commands.h"
#include "common.h"
#include "eval/report.h"
#include "generate/bench.h"

namespace longhaul::cli {
namespace {

struct BenchFlags {
  ModelFlags model;
  std::vector<int32_t> n_prompt{512};  // 0 = no prompt tests
  std::vector<int32_t> n_gen{128};     // 0 = no generation tests
  std::vector<int32_t> n_depth{0};     // tokens in the cache before each test
  std::vector<int32_t> n_threads{0};   // 0 = all cores
  int32_t n_reps = 5;
  int32_t n_warmup = 1;
  int32_t n_batch = 512;
  uint32_t seed = 1234;
  bool json = false;
  KvPolicyFlags kv;  // --kv-policy and its parameters, for every test
  PrefillFlags prefill;  // --prefill-attn
  PruneFlags prune;      // --prune-sublayers
  // Speculative mode (--spec-type): greedy decoding of the prompt file, plain and with each draft source.
  SpeculativeFlags speculative;
  std::string prompt_file;
  bool chat = false;
};

// Weights and parameters as llama-bench counts them: every tensor of the file.
struct ModelSize {
  int64_t bytes = 0;
  int64_t params = 0;
};
ModelSize model_size(const model::Model& m) {
  ModelSize s;
  for (const auto& t : m.file().tensors()) {
    s.bytes += t.size_bytes;
    s.params += t.n_elements;
  }
  return s;
}

std::string model_label(const std::string& path) {
  std::string name = path.substr(path.find_last_of('/') + 1);
  const std::string ext = ".gguf";
  if (name.size() > ext.size() && name.compare(name.size() - ext.size(), ext.size(), ext) == 0)
    name.resize(name.size() - ext.size());
  return name;
}

std::string fmt(const char* format, double a, double b = 0) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, a, b);
  return buf;
}

// Progress of the slow parts on stderr (status_line_printer: a live line on a terminal, a line every few seconds
// in a log), and in a log the end of each depth prefill, so that a long depth is never silent.
generate::BenchProgressFn make_progress(const std::string& label) {
  const bool tty = isatty(STDERR_FILENO) != 0;
  auto print = status_line_printer();
  return [tty, label, print](std::string_view stage, int64_t done, int64_t total) {
    print(label + ": " + std::string(stage) + " " + std::to_string(done) + "/" + std::to_string(total));
    if (!tty && stage == "depth prefill" && done == total)
      std::fprintf(stderr, "%s: depth prefill of %lld tokens done\n", label.c_str(), static_cast<long long>(total));
  };
}

// Every test's options from the flags, at one thread count.
generate::BenchOptions bench_options(const BenchFlags& f, int32_t n_threads,
                                     std::shared_ptr<const kv::HeadProfile> head_profile,
                                     const model::PrefillAttentionOptions& prefill, const model::SublayerSkip& skip) {
  generate::BenchOptions options;
  options.n_threads = n_threads;
  options.n_reps = f.n_reps;
  options.n_warmup = f.n_warmup;
  options.n_batch = f.n_batch;
  options.seed = f.seed;
  options.kv_policy = f.kv.policy;
  options.head_profile = std::move(head_profile);
  options.prefill_attn = prefill;
  options.skip = skip;
  return options;
}

// The closing part of either mode's output: the JSON object of every result and the machine, or the machine line
// under the Markdown table.
void print_machine(bool json, const nlohmann::ordered_json& results, const generate::MachineInfo& machine) {
  if (json) {
    nlohmann::ordered_json out;
    out["results"] = results;
    out["machine"] = {{"cpu", machine.cpu}, {"isa", machine.isa}, {"cores", machine.n_cores}};
    std::printf("%s\n", out.dump(1).c_str());
  } else {
    std::printf("\nmachine: %s, %d cores, kernels %s | peak RSS %.1f MiB\n", machine.cpu.c_str(), machine.n_cores,
                machine.isa.c_str(), static_cast<double>(peak_rss_bytes()) / (1 << 20));
  }
}

// What both modes prepare before their tests: the model (and its tokenizer, for the speculative mode's prompt; the
// pp and tg tests feed ids and do not load it), the prefill attention, the head profile and the pruned sub-layers
// the flags ask for, and the model column's label.
struct BenchSetup {
  LoadedModel loaded;
  model::PrefillAttentionOptions prefill;
  std::shared_ptr<const kv::HeadProfile> head_profile;
  model::SublayerSkip pruned;
  std::string path;
  std::string label;
};

// Loads and prepares for `thread_counts` (the profile is computed with the last). `speculative`: load the tokenizer
// too, and the profile's sub-layer order when --spec-type names self. An error result names what failed (exit 1).
Result<BenchSetup> prepare_bench(const BenchFlags& f, const std::vector<int32_t>& thread_counts, bool speculative) {
  BenchSetup setup;
  const bool needs_sublayers = speculative && speculative_needs_sublayers(f.speculative);
  LH_ASSIGN_OR_RETURN(setup.path, resolve_model_path(f.model.model));
  if (speculative) {
    LH_ASSIGN_OR_RETURN(setup.loaded, load_model(setup.path));
  } else {
    LH_ASSIGN_OR_RETURN(setup.loaded.model, model::Model::load(setup.path));
  }
  const model::Model& m = *setup.loaded.model;
  check_kv_policy(m, f.kv.policy);
  check_prune(m, f.prune);
  LH_ASSIGN_OR_RETURN(setup.prefill, prepare_prefill_attention(m, f.prefill, f.kv.head_profile, thread_counts.back()));
  LH_ASSIGN_OR_RETURN(setup.head_profile,
                      prepare_head_profile(m, f.kv.policy, f.kv.head_profile, thread_counts.back(),
                                           f.prune.n_pruned > 0 || needs_sublayers));
  LH_ASSIGN_OR_RETURN(setup.pruned, pruned_sublayers(m, f.prune, setup.head_profile));
  // A pruned model's rows say so in the model column: its speed is not the whole model's.
  setup.label =
      model_label(setup.path) + (f.prune.n_pruned > 0 ? " -" + std::to_string(f.prune.n_pruned) + " sub-layers" : "");
  return setup;
}

// Speculative mode: for each thread count and each -n, plain greedy decoding of the prompt, then each draft source
// of --spec-type, in one process, so that each source's speed-up is over plain decoding measured beside it.
int run_speculative(const BenchFlags& f, const std::vector<int32_t>& thread_counts) {
  require_valid_speculative(f.speculative);
  Result<std::string> text = read_input_file(f.prompt_file);
  if (!text) return report_error(text.message());
  Result<BenchSetup> setup = prepare_bench(f, thread_counts, true);
  if (!setup) return report_error(setup.message());
  const LoadedModel& loaded = setup->loaded;
  const model::Model& m = *loaded.model;
  if (f.chat) note_if_not_instruction_tuned(m);
  const std::vector<int32_t> prompt =
      f.chat ? encode_single_turn(loaded, "", *text, false) : loaded.tokenizer->encode(*text, true, false);
  if (prompt.empty()) return report_error("the prompt tokenizes to no tokens; give a non-empty prompt file");
  LoadedModel draft;  // -md, shared by every run of --spec-type draft
  if (Status st = load_draft_model(f.speculative, draft); !st) return report_error(st.message());
  const std::string& label = setup->label;
  const std::shared_ptr<const kv::HeadProfile>& head_profile = setup->head_profile;
  const generate::MachineInfo machine = generate::machine_info();
  // Plain decoding first: the baseline of every source's speed-up and output.
  std::vector<std::string> types{"none"};
  for (const std::string& t : speculative_types(f.speculative))
    if (std::find(types.begin(), types.end(), t) == types.end()) types.push_back(t);

  if (!f.json) {
    std::printf("| model | threads | kv | prompt | test | spec | t/s | speed-up | e2e t/s | mean accepted | "
                "accepted / drafted | steps | same output |\n");
    std::printf("| ----- | ------: | -- | -----: | ---- | ---- | --: | -------: | ------: | ------------: | "
                "-----------------: | ----: | ----------: |\n");
    std::fflush(stdout);
  }
  nlohmann::ordered_json results = nlohmann::ordered_json::array();
  const bool tty = isatty(STDERR_FILENO) != 0;
  for (int32_t n_threads : thread_counts) {
    for (int32_t n_gen : f.n_gen) {
      if (n_gen == 0) continue;
      const std::string test = "tg" + std::to_string(n_gen);
      generate::SpeculativeBenchResult plain;
      for (const std::string& type : types) {
        const generate::BenchOptions options = bench_options(f, n_threads, head_profile, setup->prefill, setup->pruned);
        const SpeculativeFlags one = with_speculative_type(f.speculative, type);
        generate::GenerateOptions decode;
        generate::DraftSourceFactory make_draft = nullptr;
        if (type != "none") {
          decode.draft_max = one.options.draft_max;
          decode.draft_min = one.options.draft_min;
          decode.draft_adaptive = one.options.adaptive;
          // Called within this iteration's run_speculative_bench, while `one` lives.
          make_draft = [&](ThreadPool& pool,
                           int32_t n_ctx) -> Result<std::shared_ptr<generate::speculative::DraftSource>> {
            generate::GenerateOptions go;
            LH_RETURN_IF_ERROR(
                set_draft_source(one, draft_source_inputs(loaded, draft, &pool, n_ctx, head_profile), go));
            return go.draft;
          };
        }
        const std::string progress_label = "bench " + test + " " + type + " t=" +
                                           std::to_string(n_threads > 0 ? n_threads : machine.n_cores);
        Result<generate::SpeculativeBenchResult> r = generate::run_speculative_bench(
            m, *loaded.tokenizer, prompt, n_gen, options, decode, make_draft, make_progress(progress_label));
        if (tty) std::fprintf(stderr, "\r\033[K");
        if (!r) return report_error(test + " " + type + ": " + r.message());
        if (type == "none") plain = *r;
        const double speedup = plain.tokens_per_s > 0 ? r->tokens_per_s / plain.tokens_per_s : 0.0;
        // Tokens equal to plain decoding's (speculation is lossless; a near tie may round the other way).
        size_t same = 0;
        while (same < r->tokens.size() && same < plain.tokens.size() && r->tokens[same] == plain.tokens[same]) ++same;
        const generate::SpeculativeStats& st = r->stats;
        if (f.json) {
          results.push_back({{"model", label},
                             {"test", test},
                             {"spec_type", type},
                             {"prompt_tokens", prompt.size()},
                             {"n_gen", n_gen},
                             {"threads", r->n_threads},
                             {"kv_policy", r->kv_policy},
                             {"tokens_per_s", r->tokens_per_s},
                             {"stddev", r->stddev},
                             {"samples", r->tokens_per_s_samples},
                             {"speedup", speedup},
                             {"end_to_end_tokens_per_s", r->end_to_end_tokens_per_s},
                             {"end_to_end_samples", r->end_to_end_samples},
                             {"steps", st.n_steps},
                             {"drafted", st.n_drafted},
                             {"accepted", st.n_accepted},
                             {"mean_accepted_length", st.mean_accepted_length()},
                             {"same_output_tokens", same},
                             {"reps", f.n_reps}});
        } else {
          std::printf("| %s | %d | %s | %zu | %s | %s | %s | %s | %s | %s | %s | %s | %zu/%zu |\n", label.c_str(),
                      r->n_threads, r->kv_policy.c_str(), prompt.size(), test.c_str(), type.c_str(),
                      fmt("%.2f ± %.2f", r->tokens_per_s, r->stddev).c_str(), fmt("%.2fx", speedup).c_str(),
                      fmt("%.2f", r->end_to_end_tokens_per_s).c_str(),
                      fmt("%.2f", st.mean_accepted_length()).c_str(),
                      type == "none" ? "-" : fmt("%.0f / %.0f", static_cast<double>(st.n_accepted),
                                                 static_cast<double>(st.n_drafted)).c_str(),
                      std::to_string(st.n_steps).c_str(), same, plain.tokens.size());
          std::fflush(stdout);
        }
      }
    }
  }
  print_machine(f.json, results, machine);
  return 0;
}

int run(const BenchFlags& f, bool speculative) {
  // Sizes and thread counts are range-checked while parsing (exit 2 before any test runs).
  std::vector<int32_t> thread_counts;
  for (int32_t t : f.n_threads) thread_counts.push_back(cap_threads(t));
  if (speculative) return run_speculative(f, thread_counts);
  require_valid_speculative(f.speculative);  // a draft flag without --spec-type is refused, as on run
  if (!f.prompt_file.empty() || f.chat)
    throw UsageError(std::string(f.chat ? "--chat" : "-f") + " is read by --spec-type only (the pp and tg tests feed "
                     "random ids, as llama-bench does)");
  const std::vector<generate::BenchTest> tests = generate::expand_bench_tests(f.n_prompt, f.n_gen, f.n_depth);
  if (tests.empty()) throw UsageError("no tests: -p and -n are both 0");

  Result<BenchSetup> setup = prepare_bench(f, thread_counts, false);
  if (!setup) return report_error(setup.message());
  const model::Model& m = *setup->loaded.model;
  for (const generate::BenchTest& test : tests)
    warn_past_training_context(m, static_cast<int64_t>(test.n_depth) + test.n_prompt + test.n_gen,
                               "test " + test.name() + " (depth + prompt + generated)");
  const ModelSize size = model_size(m);
  const std::string& label = setup->label;
  const generate::MachineInfo machine = generate::machine_info();

  if (!f.json) {
    std::printf("| model | size | params | threads | kv | prefill | test | t/s | GB/s | keys read |\n");
    std::printf("| ----- | ---: | -----: | ------: | -- | ------- | ---- | --: | ---: | --------: |\n");
    std::fflush(stdout);
  }
  nlohmann::ordered_json results = nlohmann::ordered_json::array();
  const bool tty = isatty(STDERR_FILENO) != 0;
  for (int32_t n_threads : thread_counts) {
    for (const generate::BenchTest& test : tests) {
      const generate::BenchOptions options =
          bench_options(f, n_threads, setup->head_profile, setup->prefill, setup->pruned);
      const std::string progress_label =
          "bench " + test.name() + " t=" + std::to_string(n_threads > 0 ? n_threads : machine.n_cores);
      Result<generate::BenchResult> r = generate::run_bench(m, test, options, make_progress(progress_label));
      if (tty) std::fprintf(stderr, "\r\033[K");
      if (!r) return report_error(test.name() + ": " + r.message());
      if (f.json) {
        results.push_back({{"model", label},
                           {"test", test.name()},
                           {"n_prompt", test.n_prompt},
                           {"n_gen", test.n_gen},
                           {"n_depth", test.n_depth},
                           {"threads", r->n_threads},
                           {"kv_policy", r->kv_policy},
                           {"prefill_attn", r->prefill_attn},
                           {"tokens_per_s", r->tokens_per_s},
                           {"stddev", r->stddev},
                           {"samples", r->tokens_per_s_samples},
                           {"cpu_samples", r->cpu_tokens_per_s_samples},
                           {"reps", f.n_reps},
                           {"weight_bytes_per_token", r->weight_bytes_per_token},
                           {"kv_bytes_per_token", r->kv_bytes_per_token},
                           {"kv_cache_bytes", r->kv_cache_bytes},
                           {"keys_read", r->keys_read >= 0 ? nlohmann::ordered_json(r->keys_read) : nullptr},
                           {"peak_rss_bytes", r->peak_rss_bytes},
                           {"model_bytes", size.bytes},
                           {"model_params", size.params}});
      } else {
        std::printf("| %s | %s | %s | %d | %s | %s | %s | %s | %s | %s |\n", label.c_str(),
                    fmt("%.2f MiB", static_cast<double>(size.bytes) / (1 << 20)).c_str(),
                    fmt("%.2f M", static_cast<double>(size.params) / 1e6).c_str(), r->n_threads,
                    r->kv_policy.c_str(), r->prefill_attn.c_str(), test.name().c_str(),
                    fmt("%.2f ± %.2f", r->tokens_per_s, r->stddev).c_str(), fmt("%.2f", r->bytes_per_s() / 1e9).c_str(),
                    r->keys_read >= 0 ? fmt("%.3f", r->keys_read).c_str() : "-");
        std::fflush(stdout);
      }
    }
  }
  print_machine(f.json, results, machine);
  return 0;
}

}  // namespace

Runner add_bench_command(CLI::App& app) {
  auto flags = std::make_shared<BenchFlags>();
  CLI::App* cmd = app.add_subcommand(
      "bench", "Measure prompt-processing (ppP) and generation (tgN, tgN@dD) throughput like llama-bench");
  add_model_flags(*cmd, flags->model);
  // Each list element is range-checked (CLI11 applies a check to every value), so `-t 1,5000` fails before the
  // t=1 tests run.
  cmd->add_option("-p,--n-prompt", flags->n_prompt, "prompt tokens per pp test, comma list (0: no pp tests)")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 24));
  cmd->add_option("-n,--n-gen", flags->n_gen, "generated tokens per tg test, comma list (0: no tg tests)")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 24));
  cmd->add_option("-d,--n-depth", flags->n_depth, "tokens already in the cache before each test, comma list")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 24));
  cmd->add_option("-t,--threads", flags->n_threads,
                  "threads, comma list (0: all cores; capped at the cores available, at most 1024)")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  cmd->add_option("-r,--repetitions", flags->n_reps, "measured repetitions per test")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--warmup", flags->n_warmup, "unmeasured runs before the repetitions (0: none)")
      ->capture_default_str()
      ->check(CLI::Range(0, 100));
  cmd->add_option("-b,--batch-size", flags->n_batch, "most prompt tokens per forward step")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  cmd->add_option("-s,--seed", flags->seed, "seed of the random token ids")->capture_default_str();
  cmd->add_flag("--json", flags->json, "print one JSON object instead of a Markdown table");
  add_kv_policy_flags(*cmd, flags->kv);
  add_prefill_flags(*cmd, flags->prefill);
  add_prune_flags(*cmd, flags->prune);
  // Speculative decoding: with --spec-type, -n tokens are decoded greedily after the prompt file (-f), plain and
  // with each draft source listed; -p and -d do not apply.
  add_speculative_flags(*cmd, flags->speculative, /*type_list=*/true);
  CLI::Option* file = cmd->add_option("-f,--file", flags->prompt_file,
                                      "--spec-type: the prompt, a text file (the tg tests' random ids give a draft "
                                      "source nothing to guess)");
  cmd->add_flag("--chat", flags->chat, "--spec-type: wrap the prompt in the model's chat format");
  CLI::Option* spec_type = cmd->get_option("--spec-type");
  CLI::Option* n_prompt = cmd->get_option("-p");
  CLI::Option* n_depth = cmd->get_option("-d");
  return [flags, file, spec_type, n_prompt, n_depth]() {
    const bool speculative = spec_type->count() > 0;  // --spec-type none alone: plain decoding of the prompt
    if (speculative) {
      if (file->count() == 0) throw UsageError("--spec-type needs a prompt file (-f FILE) to decode after");
      if (n_prompt->count() > 0 || n_depth->count() > 0)
        throw UsageError("-p and -d do not apply with --spec-type: the prompt is the file's, -n the tokens decoded");
    }
    return run(*flags, speculative);
  };
}

}  // namespace longhaul::cli
