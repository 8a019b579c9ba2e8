// longhaul serve: the OpenAI-compatible HTTP server (src/server/server.h). This file only parses flags, loads the
// model and starts the server; SIGINT and SIGTERM shut it down cleanly (exit 0).
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <thread>

#include "commands.h"
#include "common.h"
#include "generate/engine.h"
#include "kv/policy_registry.h"
#include "server/server.h"
#include "tokenizer/chat_format.h"

namespace longhaul::cli {
namespace {

struct ServeFlags {
  ModelFlags model;
  SamplingFlags sampling;
  KvPolicyFlags kv;
  PrefillFlags prefill;
  SpeculativeFlags speculative;
  std::string host = "127.0.0.1";
  int32_t port = 8080;
  int32_t parallel = 4;
  int32_t n_ctx = 4096;         // per sequence; 0 = the model's training context
  int32_t n_threads = 0;        // 0 = all cores
  int32_t prefill_chunk = 512;  // tokens per step (decodes first, then prompt chunks)
  std::string api_key;          // "" = LONGHAUL_API_KEY, or none
  int32_t max_queue = 64;
  int32_t timeout = 600;
  std::string pooling = "mean";
  std::string allowed_policies;  // comma list of policy names; "" = all
  std::string alias;             // the model's id in the API; "" = the -m value's file name
  bool no_prefix_cache = false;  // --no-prefix-cache
};

std::string model_id(const ServeFlags& f) {
  if (!f.alias.empty()) return f.alias;
  std::string id = f.model.model.substr(f.model.model.find_last_of('/') + 1);
  if (id.size() > 5 && id.compare(id.size() - 5, 5, ".gguf") == 0) id.resize(id.size() - 5);
  return id;
}

int run(const ServeFlags& f) {
  require_valid(sampling::validate(f.sampling.options));
  require_valid_speculative(f.speculative);
  const int32_t n_threads = cap_threads(f.n_threads);
  server::ServerOptions so;
  so.host = f.host;
  so.port = f.port;
  so.api_key = f.api_key;
  if (so.api_key.empty())
    if (const char* env = std::getenv("LONGHAUL_API_KEY"); env != nullptr) so.api_key = env;
  so.max_parallel = f.parallel;
  so.max_queue = f.max_queue;
  so.timeout_seconds = f.timeout;
  so.pooling = f.pooling == "last" ? generate::Pooling::kLast : generate::Pooling::kMean;
  so.default_kv_policy = f.kv.policy;
  so.sampling = f.sampling.options;
  so.prefix_cache = !f.no_prefix_cache;
  std::stringstream names(f.allowed_policies);
  for (std::string name; std::getline(names, name, ',');) {
    if (name.empty()) continue;
    const std::vector<std::string> known = kv::kv_policy_names();
    if (std::find(known.begin(), known.end(), name) == known.end())
      throw UsageError("--allow-kv-policy: unknown KV policy '" + name + "'");
    so.allowed_kv_policies.push_back(name);
  }
  const std::string default_name = f.kv.policy.substr(0, f.kv.policy.find(':'));
  if (!so.allowed_kv_policies.empty() &&
      std::find(so.allowed_kv_policies.begin(), so.allowed_kv_policies.end(), default_name) == so.allowed_kv_policies.end())
    throw UsageError("--kv-policy " + default_name + " is not among --allow-kv-policy " + f.allowed_policies);

  // SIGINT and SIGTERM go to one thread that asks the server to stop: blocked here, before any thread starts, so
  // every thread inherits the mask and none is interrupted mid-write.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // Listen first: /health answers 503 while the model loads.
  server::Server server(so);
  if (Status st = server.listen(); !st) return report_error(st.message());
  std::thread signal_thread([&server, signals] {
    int sig = 0;
    sigwait(&signals, &sig);
    std::fprintf(stderr, "longhaul serve: %s received, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    server.shutdown();
  });
  signal_thread.detach();
  std::fprintf(stderr, "longhaul serve: listening on http://%s:%d, loading %s\n", f.host.c_str(), server.port(),
               f.model.model.c_str());

  Result<GenerationModel> generation = load_generation_model(f.model.model, f.kv.policy, f.n_ctx, "-c/--ctx-size");
  if (!generation) return report_error(generation.message());
  const LoadedModel* loaded = &generation->loaded;
  const model::Model& model = *loaded->model;
  const int32_t n_ctx = generation->n_ctx;
  Result<model::PrefillAttentionOptions> prepared =
      prepare_prefill_attention(*loaded->model, f.prefill, f.kv.head_profile, n_threads);
  if (!prepared) return report_error(prepared.message());
  const model::PrefillAttentionOptions prefill = std::move(prepared).value();
  note_if_not_instruction_tuned(model);
  generate::EngineOptions eo;
  eo.n_ctx = n_ctx;
  eo.n_batch = f.prefill_chunk;
  eo.n_threads = n_threads;
  // The prefix cache keeps cached prompts in sequences of their own, beside the running ones.
  eo.max_sequences = f.no_prefix_cache ? f.parallel : 2 * f.parallel;
  Result<std::unique_ptr<generate::Engine>> engine = generate::Engine::create(model, eo);
  if (!engine) return report_error(engine.message());
  // The head profile (duo, lserve): when the default policy reads it, or when --head-profile names one (then
  // requests may ask for those policies too); its sub-layer order for --spec-type self.
  Result<std::shared_ptr<const kv::HeadProfile>> head_profile =
      prepare_head_profile(model, f.kv.head_profile.empty() ? f.kv.policy : "duo", f.kv.head_profile, n_threads,
                           speculative_needs_sublayers(f.speculative));
  if (!head_profile) return report_error(head_profile.message());
  // One draft source for every request of the server (a draft model's engine shares the target's pool).
  LoadedModel draft;  // outlives the server's draft source, which serve() releases before it returns
  if (Status st = load_draft_model(f.speculative, draft); !st) return report_error(st.message());
  generate::GenerateOptions speculation;  // only its draft source and limits are read
  if (Status st = set_draft_source(f.speculative, draft_source_inputs(*loaded, draft, &(*engine)->pool(), n_ctx, *head_profile),
                                   speculation);
      !st)
    return report_error(st.message());

  server::ServedModel served;
  served.id = model_id(f);
  served.model = &model;
  served.tokenizer = loaded->tokenizer.get();
  served.chat_format = tokenizer::detect_chat_format(model.file());
  served.engine = engine->get();
  served.head_profile = *head_profile;
  served.prefill_attn = prefill;
  served.n_ctx = n_ctx;
  served.draft = speculation.draft;
  served.draft_max = speculation.draft_max;
  served.draft_min = speculation.draft_min;
  served.draft_adaptive = speculation.draft_adaptive;
  server.serve(served);  // until SIGINT or SIGTERM
  std::fprintf(stderr, "longhaul serve: stopped\n");
  return 0;
}

}  // namespace

Runner add_serve_command(CLI::App& app) {
  auto flags = std::make_shared<ServeFlags>();
  CLI::App* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server (chat, completions, embeddings)");
  add_model_flags(*cmd, flags->model);
  cmd->add_option("--host", flags->host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", flags->port, "TCP port (0: any free port)")->capture_default_str()->check(CLI::Range(0, 65535));
  cmd->add_option("--parallel", flags->parallel, "sequences generating at once (continuous batching)")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  cmd->add_option("-c,--ctx-size", flags->n_ctx, "context size of each sequence in tokens (0: the model's training context)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 24));
  add_threads_flag(*cmd, flags->n_threads);
  cmd->add_option("--prefill-chunk,-b,--batch-size", flags->prefill_chunk,
                  "tokens per step: every running sequence's decode token first, then prompt chunks (SARATHI)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--api-key", flags->api_key,
                  "require 'Authorization: Bearer KEY' on every endpoint but /health (also LONGHAUL_API_KEY)");
  cmd->add_option("--max-queue", flags->max_queue, "requests waiting beyond --parallel before 429")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--timeout", flags->timeout, "seconds a client may stall a read or a write before it is dropped")
      ->capture_default_str()
      ->check(CLI::Range(1, 86400));
  cmd->add_option("--pooling", flags->pooling, "/v1/embeddings pooling of the final hidden states")
      ->capture_default_str()
      ->check(CLI::IsMember({"mean", "last"}));
  cmd->add_option("--allow-kv-policy", flags->allowed_policies,
                  "comma list of the KV policy names a request's kv_policy may name (default: all)");
  cmd->add_option("--alias", flags->alias, "the model's id in the API (default: the -m value's file name)");
  cmd->add_flag("--no-prefix-cache", flags->no_prefix_cache,
                "do not reuse the KV pages of earlier prompts' common starts (whole 256-token pages, full policy)");
  add_sampling_flags(*cmd, flags->sampling);
  add_kv_policy_flags(*cmd, flags->kv);
  add_prefill_flags(*cmd, flags->prefill);
  add_speculative_flags(*cmd, flags->speculative);
  return [flags]() { return run(*flags); };
}

}  // namespace longhaul::cli
