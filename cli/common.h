// Flag groups and helpers shared by the subcommands. The CLI only parses flags
// and wires modules; everything else lives in src/.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <memory>
#include <string>

#include "base/status.h"
#include "kv/kv_policy.h"
#include "model/model.h"
#include "sampling/sampling_options.h"
#include "tokenizer/tokenizer.h"

namespace longhaul::cli {

// Exit codes: 0 ok, 1 runtime error (bad model file, I/O), 2 bad command line.
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;

// Prints "longhaul: error: <message>" to stderr and returns kExitError.
int report_error(const std::string& message);

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

// KV-cache policy flags shared by run, chat, bench and eval: --kv-policy NAME plus its
// parameters. `policy` may hold a comma list where a command compares policies (eval).
struct KvPolicyFlags {
  std::string policy = "full";
  kv::KvPolicyOptions options;
};
void add_kv_policy_flags(CLI::App& app, KvPolicyFlags& flags);

// A one-line status on stderr for long work: rewritten in place on a terminal, one line per update otherwise.
// clear_status_line() erases it (on a terminal) once the work is done.
std::function<void(const std::string&)> status_line_printer();
void clear_status_line();

// duo needs a head profile. When `policy_list` names duo and options.head_profile is empty, sets it to the profile
// saved beside the model (MODEL.gguf.heads, or ~/.cache/longhaul/heads/ when the model's folder is read-only),
// computing and saving it first when there is none, with a progress line on stderr.
Status prepare_head_profile(const model::Model& model, const std::string& policy_list, kv::KvPolicyOptions& options,
                            int32_t n_threads);
// Where that profile lives for the model file at `model_path` (the first candidate that exists, else the first
// writable one).
std::string default_head_profile_path(const std::string& model_path);

// Reads a prompt from -p or -f (exactly one must be given when `required`).
Result<std::string> read_prompt(const std::string& prompt, const std::string& file, bool required);

// Tokenizes a chat made of an optional system message and one user message with
// the model's chat format, adding the generation prompt; control tokens parsed.
std::string format_single_turn(const LoadedModel& loaded, const std::string& system, const std::string& user);

}  // namespace longhaul::cli
