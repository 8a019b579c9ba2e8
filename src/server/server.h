// `longhaul serve`: an OpenAI-compatible HTTP server (cpp-httplib) over one generate::Engine.
//
// Endpoints: POST /v1/chat/completions, /v1/completions (streaming over SSE and not), /v1/embeddings; GET /v1/models,
// /health (503 while the model loads), /metrics (Prometheus text); POST /tokenize, /detokenize (llama-server's
// shapes). HTTP threads parse, validate and tokenize a request, submit it to the Scheduler (one engine thread) and
// stream its events back; every failure is an OpenAI-shaped error (api_error.h).
//
// Life cycle: listen() binds and answers (/health says 503 "loading"), serve(model) serves until shutdown() (from
// a signal thread: SIGINT/SIGTERM), which refuses new requests, cancels the running ones and returns.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "generate/engine.h"
#include "generate/generator.h"
#include "generate/speculative/draft_source.h"
#include "kv/head_profile.h"
#include "model/model.h"
#include "model/sparse_prefill.h"
#include "sampling/sampling_options.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/tokenizer.h"

namespace longhaul::server {

struct ServerOptions {
  std::string host = "127.0.0.1";  // address to bind (loopback by default)
  int32_t port = 8080;             // 0 = any free port (port() tells which)
  std::string api_key;             // "" = none; else every endpoint but /health needs "Authorization: Bearer KEY"
  int32_t max_parallel = 4;        // sequences generating at once
  int32_t max_queue = 64;          // requests waiting beyond them before 429
  int32_t timeout_seconds = 600;   // socket read/write timeout: a stalled client is dropped after it
  int64_t max_body_bytes = 8 << 20;  // larger bodies get 413
  generate::Pooling pooling = generate::Pooling::kMean;  // /v1/embeddings
  // KV policies a request's "kv_policy" may name (by name; empty = every registered policy) and the default.
  std::vector<std::string> allowed_kv_policies;
  std::string default_kv_policy = "full";
  sampling::SamplingOptions sampling;  // defaults for fields a request leaves out
  int64_t kv_budget_bytes = 0;         // admission budget (0 = max_parallel sequences of n_ctx tokens)
  // Requests reuse the KV pages of earlier prompts' common starts (generate/prefix_cache.h); the engine needs
  // sequences beyond max_parallel for the cached prefixes. false: --no-prefix-cache.
  bool prefix_cache = true;
};

// What serve() serves; everything must outlive the call.
struct ServedModel {
  std::string id;  // the name /v1/models lists and requests must give
  const model::Model* model = nullptr;
  const tokenizer::Tokenizer* tokenizer = nullptr;
  tokenizer::ChatFormat chat_format = tokenizer::ChatFormat::kChatMl;
  generate::Engine* engine = nullptr;  // driven by the server's engine thread only, from serve() to its return
  std::shared_ptr<const kv::HeadProfile> head_profile;  // for duo and lserve (null = none)
  model::PrefillAttentionOptions prefill_attn;
  int32_t n_ctx = 4096;  // context of each sequence in tokens
  // Speculative decoding (--spec-type): one draft source for every generating request but those that ask for
  // logprobs (a draft step records none), null = plain decoding. It is called only from the engine thread and
  // keeps per-request state by DraftContext::request, so one source serves them all (Token Recycling's and ADED's
  // tables learn from every request).
  std::shared_ptr<generate::speculative::DraftSource> draft;
  int32_t draft_max = 16;  // most draft tokens (tree nodes) verified per step
  int32_t draft_min = 0;   // a shorter draft is not verified: the step decodes one token (0 = any draft)
  bool draft_adaptive = true;  // GenerateOptions::draft_adaptive (false: --draft-fixed)
};

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // A GET route with fixed content (the chat page registers "/" here). Before listen().
  void add_static_route(const std::string& path, const std::string& content_type, std::string body);
  // Binds host:port and starts answering on a thread of its own. Fails when the address cannot be bound.
  Status listen();
  int32_t port() const;
  // Serves `model` until shutdown(); then cancels what runs, stops listening and returns.
  void serve(const ServedModel& model);
  // Thread-safe, idempotent; serve() returns soon after.
  void shutdown();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace longhaul::server
