// The server's internals, shared by server.cc (life cycle, small routes), completions.cc and embeddings.cc.
#pragma once

#include <httplib.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "server/api_error.h"
#include "server/metrics.h"
#include "server/request_parser.h"
#include "server/scheduler.h"
#include "server/server.h"

namespace longhaul::server {

// One line per request on stderr.
struct RequestLog {
  std::string id;
  std::string endpoint;
  int status = 200;
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  double time_to_first_token = -1.0;  // seconds; < 0 = none
  // Speculative decoding (llama-server's timings.draft_n and draft_n_accepted): draft tokens verified and accepted,
  // over the request's choices; logged only when it ran with a draft source.
  bool speculative = false;
  int64_t draft_n = 0;
  int64_t draft_n_accepted = 0;
  double started_at = 0.0;
};

struct Server::Impl {
  ServerOptions options;
  httplib::Server http;
  std::thread listen_thread;
  int listen_socket = -1;  // the bound socket, captured to deepen its accept queue (Server::listen)
  int32_t bound_port = 0;
  int64_t created = 0;  // unix time the server started (the model's "created")

  std::atomic<bool> ready{false};  // a model is served
  std::mutex mutex;
  std::condition_variable shutdown_requested;
  bool shutting_down = false;  // guarded by mutex

  ServedModel model;  // valid while ready
  std::unique_ptr<Scheduler> scheduler;
  Metrics metrics;
  std::atomic<uint64_t> next_id{1};

  // KV policy specs already built for the model: the policy's memory bound in cells (0 = none), or the error.
  std::mutex policy_mutex;
  std::map<std::string, Result<int32_t>> checked_policies;

  explicit Impl(ServerOptions o) : options(std::move(o)) {}

  void setup_routes();
  // The served model's state is there (ready), or the 503 to send.
  std::optional<ApiError> check_ready() const;
  std::optional<ApiError> check_model(const std::string& name) const;
  // Builds `spec` once for the model: its memory bound in cells (0 = none), or the 400 naming the problem.
  Result<int32_t> check_kv_policy(const std::string& spec);
  // Token ids of a prompt the client gave (text: BOS where the model adds one, no control tokens parsed).
  std::optional<ApiError> prompt_ids(const PromptInput& input, const std::string& field, std::vector<int32_t>& ids) const;

  void handle_completion(const httplib::Request& req, httplib::Response& res, Endpoint endpoint);
  void handle_embeddings(const httplib::Request& req, httplib::Response& res);

  void log_request(const RequestLog& log) const;
};

// The 503 of a server that is loading its model or shutting down.
ApiError unavailable();

void send_json(httplib::Response& res, int status, const std::string& body);
void send_error(httplib::Response& res, const ApiError& error);

}  // namespace longhaul::server
