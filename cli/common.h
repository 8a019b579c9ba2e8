// Flag groups and helpers shared by the subcommands. The CLI only parses flags
// and wires modules; everything else lives in src/.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/status.h"
#include "eval/report.h"
#include "generate/generator.h"
#include "generate/speculative/registry.h"
#include "kv/kv_policy.h"
#include "model/model.h"
#include "model/sparse_prefill.h"
#include "sampling/sampling_options.h"
#include "tokenizer/tokenizer.h"

namespace longhaul::cli {

// Exit codes: 0 ok, 1 runtime error (bad model file, I/O), 2 bad command line.
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;

// Prints "longhaul: error: <message>" to stderr and returns kExitError. For runtime errors: a Runner returns it.
int report_error(const std::string& message);
// Prints "longhaul: warning: <message>" to stderr (after flushing stdout, so it never lands inside output).
void warn(const std::string& message);

// A command-line error: a flag value out of range, a flag that needs another, a KV policy that does not exist, an
// output path that cannot be written. main() is the one place that turns errors into exit codes: CLI11's parse
// errors and UsageError exit 2, whatever a Runner returns is its code (report_error: 1). A check throws rather than
// returns so that it can sit anywhere in a command -- before the model loads, or after when it needs the model's
// shape -- without every caller threading the kind of error back up.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
// Throws UsageError with the status's message when it is an error.
void require_valid(const Status& status);
template <class T>
T require_valid(Result<T> result) {
  if (!result) throw UsageError(result.message());
  return std::move(result).value();
}

// argv translated from llama.cpp habits (llama_cpp_flags.cc): -ngl and -fa accepted with a note, -tb, -ctk/-ctv
// (as the KV policy's bits=) and --seed -1 mapped to longhaul's flags, -x=value split; -cnv refused (UsageError).
// Also longhaul's --kv-top-p P, appended as top_p=P to each --kv-policy spec (each must select pages).
std::vector<std::string> translate_llama_cpp_flags(const std::vector<std::string>& args);

// "longhaul <version>", for --version.
inline constexpr const char* kVersion = "longhaul 0.1.0";

struct ModelFlags {
  std::string model = "smollm2-135m";  // path or short name
};
void add_model_flags(CLI::App& app, ModelFlags& flags);

// Short names resolved in $LONGHAUL_MODELS (default ~/.cache/longhaul/models):
//   smollm2-135m -> SmolLM2-135M-Instruct.Q4_1.gguf, gemma3-270m -> gemma-3-270m-q4_k_m.gguf
// Anything else is a path. A short name whose file is missing says how to install it.
Result<std::string> resolve_model_path(const std::string& name_or_path);

struct LoadedModel {
  std::unique_ptr<model::Model> model;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;
};
Result<LoadedModel> load_model(const std::string& name_or_path);
// Tokenizer only (tokenize does not need the weights bound, but validates the file the same way).
Result<LoadedModel> load_tokenizer(const std::string& name_or_path);

struct SamplingFlags {
  sampling::SamplingOptions options;
};
void add_sampling_flags(CLI::App& app, SamplingFlags& flags);

// KV-cache policy flags shared by run, chat, bench, batch and eval: --kv-policy NAME:KEY=VALUE:... (each policy
// reads its own parameters, kv/policy_params.h) and --head-profile, a model-level input of duo. `policy` may hold
// a comma list where a command compares policies (eval). The command's --help lists the policies and their
// parameters, from the registry.
struct KvPolicyFlags {
  std::string policy = "full";
  std::string head_profile;  // "" = the one saved beside the model (prepare_head_profile)
};
void add_kv_policy_flags(CLI::App& app, KvPolicyFlags& flags);

// --prefill-attn, shared by run, chat, bench, batch and eval: how long prompt chunks attend
// (model/sparse_prefill.h), parsed once by prefill_attention().
struct PrefillFlags {
  std::string spec = "dense";
};
void add_prefill_flags(CLI::App& app, PrefillFlags& flags);
// The options the flag names; a UsageError (exit 2) naming the value for a bad one.
model::PrefillAttentionOptions prefill_attention(const PrefillFlags& flags);
// The same for `model`, with the head profile that minference and moa read: the profile at `head_profile_path`
// (used as it is), or when it is empty the one saved beside the model (default_head_profile_path), whose prefill
// section is computed and saved first when it lacks one (or moa's was chosen for another density), with a progress
// line on stderr, as prepare_head_profile does for duo. A profile that does not fit the model is an error naming it.
Result<model::PrefillAttentionOptions> prepare_prefill_attention(const model::Model& model, const PrefillFlags& flags,
                                                                 const std::string& head_profile_path,
                                                                 int32_t n_threads);

// Speculative decoding flags shared by run, chat, batch and serve: --spec-type NAME, --draft-max N, --draft-min N,
// --draft-fixed, --spec-corpus FILE (retrieval), -md MODEL and --draft-p-min P (draft, self), --draft-skip N (self).
struct SpeculativeFlags {
  generate::speculative::SpeculativeOptions options;  // bench: options.type is a comma list of draft sources
};
// `type_list` (bench): --spec-type takes a comma list, each one measured.
void add_speculative_flags(CLI::App& app, SpeculativeFlags& flags, bool type_list = false);
// The draft sources --spec-type names, in order ("none" alone when none is given).
std::vector<std::string> speculative_types(const SpeculativeFlags& flags);
// validate() for each source named, and a flag given without a --spec-type that reads it: UsageError.
void require_valid_speculative(const SpeculativeFlags& flags);
// Whether the flags ask for the model's sub-layer order (--spec-type self, or a list naming it).
bool speculative_needs_sublayers(const SpeculativeFlags& flags);
// The flags with --spec-type set to the one source `type` (bench's runs, one per source of its list).
SpeculativeFlags with_speculative_type(const SpeculativeFlags& flags, const std::string& type);
// Loads the draft model (-md) into `draft` when the flags name one; it must outlive every source
// made with it. A model that cannot be loaded is an error result (exit 1).
Status load_draft_model(const SpeculativeFlags& flags, LoadedModel& draft);
// The inputs of make_draft_source for `target`: its model, vocabulary, tokenizer and head profile (self), the
// draft model in `draft` (if loaded) on the target engine's `pool`, sequences of n_ctx tokens.
generate::speculative::DraftSourceInputs draft_source_inputs(const LoadedModel& target, const LoadedModel& draft,
                                                             ThreadPool* pool, int32_t n_ctx,
                                                             std::shared_ptr<const kv::HeadProfile> head_profile);

// --prune-sublayers N, shared by run, chat, bench and eval: the model runs without the first N sub-layers of its
// calibrated removal order (FinerCut; eval/sublayer_calibration.h), trading accuracy for speed.
struct PruneFlags {
  int32_t n_pruned = 0;  // 0 = the whole model
};
void add_prune_flags(CLI::App& app, PruneFlags& flags);
// Throws UsageError when N exceeds the model's sub-layers (2 per layer).
void check_prune(const model::Model& model, const PruneFlags& flags);
// The set to skip: empty for 0, else the profile's first N (an error result when the profile cannot give them).
Result<model::SublayerSkip> pruned_sublayers(const model::Model& model, const PruneFlags& flags,
                                             const std::shared_ptr<const kv::HeadProfile>& profile);
// Sets options.draft (and its limits) to the source the flags name (null for none). Called after
// require_valid_speculative(); a corpus file or a draft model that cannot be used is an error result (exit 1).
Status set_draft_source(const SpeculativeFlags& flags, const generate::speculative::DraftSourceInputs& inputs,
                        generate::GenerateOptions& options);
// The same for the stderr statistics line: " | spec ngram: 40/64 drafted tokens accepted in 32 steps, 2.25
// tokens/step".
std::string speculative_summary(const std::string& type, const generate::SpeculativeStats& stats);

// A one-line status on stderr for long work: rewritten in place on a terminal; in a log (not a terminal), the first
// update and then one line every 10 seconds.
// clear_status_line() erases it (on a terminal) once the work is done.
std::function<void(const std::string&)> status_line_printer();
void clear_status_line();

// duo and lserve need a head profile's head scores, --spec-type self and --prune-sublayers its sub-layer order.
// When `policy_list` names such a policy or `needs_sublayers`: the profile at `path` (used as it is), or when it is
// empty the one saved beside the model (MODEL.gguf.heads, or ~/.cache/longhaul/heads/ when the model's folder is
// read-only), whose missing sections are computed and saved first, with a progress line on stderr. Null when
// nothing needs one. A saved profile of another model's shape is an error naming it.
Result<std::shared_ptr<const kv::HeadProfile>> prepare_head_profile(const model::Model& model,
                                                                    const std::string& policy_list,
                                                                    const std::string& path, int32_t n_threads,
                                                                    bool needs_sublayers = false);
// Copies into `profile` the sections it lacks from the profile already at `path`, when one is there, parses and has
// the same shape: calibrate-heads, calibrate-sublayers and calibrate-prefill each rewrite their own section of a file
// and keep the others.
void keep_other_sections(const std::string& path, kv::HeadProfile& profile);
// Where that profile lives for the model file at `model_path` (the first candidate that exists, else the first
// writable one).
std::string default_head_profile_path(const std::string& model_path);
// The frame of calibrate-heads and calibrate-prefill: checks `output` (-o; "" = default_head_profile_path) before the
// minutes of work, loads the model, runs `calibrate` on it with a status line for its progress, and saves the
// profile it returns at the output path with the other sections of the profile already there. Returns the saved
// profile and `out` = where; an error result names what failed.
using CalibrateFn = std::function<Result<kv::HeadProfile>(const LoadedModel& loaded,
                                                          const std::function<void(const std::string&)>& progress)>;
Result<kv::HeadProfile> calibrate_into_profile(const ModelFlags& model, const std::string& output,
                                               const CalibrateFn& calibrate, std::string& out);

// Reads a prompt from -p or -f (exactly one must be given when `required`; -f - reads standard input). Giving both,
// or neither when required, is a UsageError; a file that cannot be read is an error result.
Result<std::string> read_prompt(const std::string& prompt, const std::string& file, bool required);
// A text file's contents (read_text_file: directories are refused), or standard input's for "-".
Result<std::string> read_input_file(const std::string& path);
// Standard input to its end.
Result<std::string> read_stdin();

// The thread count to use for -t `requested` (0 = all cores): a count above the cores this process may run on
// (sched_getaffinity) oversubscribes them -- every step waits for the slowest thread, which waits for a core -- so
// it is capped there with a one-line warning.
int32_t cap_threads(int32_t requested);
// -t,--threads (0 = all cores), as every command but bench (a comma list there) declares it.
void add_threads_flag(CLI::App& app, int32_t& n_threads);
// llama.cpp's --threads-batch (-tb), for run and chat: longhaul has one thread count, and -tb gives it when -t is
// not given. n_threads_batch starts at -1 (not given).
void add_threads_batch_flag(CLI::App& app, int32_t& n_threads_batch);
// The capped thread count of -t, or of -tb when only -tb was given.
int32_t threads_to_use(int32_t n_threads, int32_t n_threads_batch);
// Cores this process may run on.
int32_t available_cores();

// Throws UsageError unless `path` can be created or overwritten as a file: its directory exists and is writable,
// and the path is not a directory. `flag` names the option in the message. Called before any work, so that a typo
// in an output path does not cost the whole run.
void require_writable_path(const std::string& path, const std::string& flag);

// One-line warning when `n_tokens` (a context size, a depth, an eval length) exceeds the model's training context:
// position encodings past it were never trained, so quality usually falls apart, but it is allowed (a KV policy
// may be exactly what makes it work).
void warn_past_training_context(const model::Model& model, int64_t n_tokens, const std::string& what);

// The KV policies a command will build, checked once before any work: the list parsed as eval reads it
// (eval::parse_policy_list), and each policy built once for this model through the registry the sessions use, so
// an unknown name or a value the policy rejects is a UsageError before the model runs. The head profile is not
// read here (duo's parameters are checked against a blank profile of the model's shape): its file's problems are
// runtime errors, like any file's, found where prepare_head_profile loads it and the session builds duo. A budget
// given as a share of each length (eval's budget=P%) is checked for each of `lengths`.
std::vector<eval::PolicySpec> check_kv_policies(const model::Model& model, const std::string& policy_list,
                                                const std::vector<int32_t>& lengths = {});
// The one KV policy of run, chat, bench and batch, checked as above; a comma list (eval's form) is a UsageError.
void check_kv_policy(const model::Model& model, const std::string& policy);

// A model for a command that generates, with the checks every such command makes once it is loaded: the KV policy
// is one the model can run (check_kv_policy: exits 2 otherwise), and the context, `n_ctx` tokens (0 = the model's
// training context), is resolved and warned about past the training context, naming `ctx_flag`.
struct GenerationModel {
  LoadedModel loaded;
  int32_t n_ctx = 0;  // resolved: never 0
};
Result<GenerationModel> load_generation_model(const std::string& name_or_path, const std::string& kv_policy,
                                              int32_t n_ctx, const std::string& ctx_flag);

// A one-line note on stderr when the model's file carries no chat template. Instruction-tuned GGUF conversions carry
// the template the model was tuned with; a base checkpoint (the default Gemma 3 270M file is one) has none, and in
// a chat it only echoes or continues the text, however well the format is applied.
void note_if_not_instruction_tuned(const model::Model& model);

// The prompt ids of a chat made of an optional system message and one user message in the model's chat format,
// with the generation prompt. Only the template's own markers become control tokens: the messages are user text
// (control-token lookalikes in them stay text) unless `parse_special`.
std::vector<int32_t> encode_single_turn(const LoadedModel& loaded, const std::string& system, const std::string& user,
                                        bool parse_special);

}  // namespace longhaul::cli
