#include "server/server.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "base/sys_info.h"
#include "kv/policy_registry.h"
#include "server/chat_page.h"
#include "server/responses.h"
#include "server/server_impl.h"

namespace longhaul::server {

using json = nlohmann::json;

void send_json(httplib::Response& res, int status, const std::string& body) {
  res.status = status;
  res.set_content(body, "application/json");
}

void send_error(httplib::Response& res, const ApiError& error) { send_json(res, error.status, error_json(error)); }

namespace {

// Connections the kernel holds for the accept thread (the system caps it at net.core.somaxconn).
constexpr int kListenBacklog = 1024;

// The endpoint label of /metrics: the known paths, everything else as "other" (bounded label values).
std::string endpoint_label(const std::string& path) {
  for (const char* known : {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/health",
                            "/metrics", "/tokenize", "/detokenize", "/"})
    if (path == known) return path;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  return "other";
}

// The OpenAI error type of a status the HTTP layer produced itself (no body set by a handler).
ApiError error_for_status(int status) {
  switch (status) {
    case 400: return ApiError{400, "the request could not be read", "invalid_request_error", "", ""};
    case 404: return ApiError{404, "no such endpoint", "invalid_request_error", "", "unknown_url"};
    case 405: return ApiError{405, "method not allowed", "invalid_request_error", "", ""};
    case 408: return ApiError{408, "the request was not received in time", "invalid_request_error", "", "timeout"};
    case 413:
      return ApiError{413, "the request body is larger than the server's limit", "invalid_request_error", "",
                      "request_too_large"};
    case 414: return ApiError{414, "the request URI is too long", "invalid_request_error", "", ""};
    default: return ApiError{status, "error " + std::to_string(status), status >= 500 ? "server_error" : "invalid_request_error", "", ""};
  }
}

}  // namespace

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  impl_->created = static_cast<int64_t>(std::time(nullptr));
  impl_->setup_routes();
  add_static_route("/", "text/html; charset=utf-8", std::string(chat_page_html()));
}

Server::~Server() {
  shutdown();
  impl_->http.stop();
  if (impl_->listen_thread.joinable()) impl_->listen_thread.join();
}

void Server::add_static_route(const std::string& path, const std::string& content_type, std::string body) {
  impl_->http.Get(path, [content_type, body = std::move(body)](const httplib::Request&, httplib::Response& res) {
    res.set_content(body, content_type.c_str());
  });
}

Status Server::listen() {
  Impl& s = *impl_;
  s.http.set_socket_options([&s](socket_t sock) {
    httplib::default_socket_options(sock);
    s.listen_socket = static_cast<int>(sock);
  });
  int port = s.options.port;
  if (port == 0) {
    port = s.http.bind_to_any_port(s.options.host);
    if (port < 0) return Status::error("cannot bind " + s.options.host + " to any port");
  } else if (!s.http.bind_to_port(s.options.host, port)) {
    return Status::error("cannot listen on " + s.options.host + ":" + std::to_string(port) +
                         " (in use, or not an address of this machine)");
  }
  s.bound_port = port;
  // cpp-httplib listens with an accept queue of 5 (CPPHTTPLIB_LISTEN_BACKLOG, fixed in Debian's compiled library):
  // a burst of clients connecting while the accept thread waits for a core can overflow it (the kernel then drops
  // their handshakes). Listening again on the bound socket deepens the queue.
  if (s.listen_socket >= 0 && ::listen(s.listen_socket, kListenBacklog) != 0)
    return Status::error("cannot listen on " + s.options.host + ":" + std::to_string(port) + ": " + std::strerror(errno));
  s.listen_thread = std::thread([&s] { s.http.listen_after_bind(); });
  return Status::ok();
}

int32_t Server::port() const { return impl_->bound_port; }

void Server::serve(const ServedModel& model) {
  Impl& s = *impl_;
  {
    std::unique_lock<std::mutex> lock(s.mutex);
    if (!s.shutting_down) {
      s.model = model;
      SchedulerOptions so;
      so.max_parallel = s.options.max_parallel;
      so.max_queue = s.options.max_queue;
      so.prefix_cache = s.options.prefix_cache;
      so.kv_budget_bytes = s.options.kv_budget_bytes > 0
                               ? s.options.kv_budget_bytes
                               : static_cast<int64_t>(s.options.max_parallel) * model.n_ctx *
                                     model.engine->cache().bytes_per_cell();
      s.scheduler = std::make_unique<Scheduler>(*model.engine, *model.tokenizer, so);
      s.ready = true;
      const std::string speculative = model.draft ? ", speculative decoding: " + model.draft->name() : "";
      std::fprintf(stderr, "longhaul serve: %s ready on http://%s:%d (parallel %d, context %d per sequence%s)\n",
                   model.id.c_str(), s.options.host.c_str(), s.bound_port, s.options.max_parallel, model.n_ctx,
                   speculative.c_str());
      s.shutdown_requested.wait(lock, [&] { return s.shutting_down; });
    }
  }
  // New requests now get 503; the running ones are cancelled and their streams end.
  s.ready = false;
  if (s.scheduler) s.scheduler->stop();
  s.http.stop();
  if (s.listen_thread.joinable()) s.listen_thread.join();
  s.scheduler.reset();
  // Nothing of the caller's is held past the call: a draft model's source runs on the caller's engine pool.
  s.model = ServedModel();
}

void Server::shutdown() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->shutting_down = true;
  }
  impl_->shutdown_requested.notify_all();
}

ApiError unavailable() {
  return ApiError{503, "the model is loading (or the server is shutting down)", "unavailable_error", "", "unavailable"};
}

std::optional<ApiError> Server::Impl::check_ready() const {
  if (ready) return std::nullopt;
  return unavailable();
}

std::optional<ApiError> Server::Impl::check_model(const std::string& name) const {
  if (name == model.id) return std::nullopt;
  return ApiError{404, "the model '" + name + "' does not exist; this server serves '" + model.id + "'",
                  "invalid_request_error", "model", "model_not_found"};
}

Result<int32_t> Server::Impl::check_kv_policy(const std::string& spec) {
  const std::string name = spec.substr(0, spec.find(':'));
  const auto& allowed = options.allowed_kv_policies;
  if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
    std::string list;
    for (const std::string& a : allowed) list += (list.empty() ? "" : ", ") + a;
    return Status::error("kv_policy '" + name + "' is not allowed on this server (allowed: " + list + ")");
  }
  std::lock_guard<std::mutex> lock(policy_mutex);
  auto it = checked_policies.find(spec);
  if (it == checked_policies.end()) {
    Result<kv::BuiltKvPolicy> built = kv::make_kv_policy(spec, generate::kv_policy_context(*model.model, model.head_profile));
    Result<int32_t> bound = built.is_ok() ? Result<int32_t>(built->policy->max_cells())
                                          : Result<int32_t>(Status::error("kv_policy '" + spec + "': " + built.message()));
    // Bounded: a client cannot grow the map past the policies' spellings it tries (each a few bytes).
    if (checked_policies.size() > 4096) checked_policies.clear();
    it = checked_policies.emplace(spec, std::move(bound)).first;
  }
  return it->second;
}

std::optional<ApiError> Server::Impl::prompt_ids(const PromptInput& input, const std::string& field,
                                                 std::vector<int32_t>& ids) const {
  if (input.is_ids) {
    const int32_t n_vocab = model.model->config().n_vocab;
    for (int32_t id : input.ids)
      if (id >= n_vocab)
        return bad_request("'" + field + "' token id " + std::to_string(id) + " is past the vocabulary of " +
                               std::to_string(n_vocab) + " tokens",
                           field, "invalid_value");
    ids = input.ids;
  } else {
    ids = model.tokenizer->encode(input.text, true, false);
  }
  if (ids.empty()) return bad_request("'" + field + "' is empty (no tokens)", field, "invalid_value");
  return std::nullopt;
}

void Server::Impl::log_request(const RequestLog& log) const {
  char ttft[32] = "-";
  if (log.time_to_first_token >= 0) std::snprintf(ttft, sizeof ttft, "%.3fs", log.time_to_first_token);
  char draft[64] = "";
  if (log.speculative)
    std::snprintf(draft, sizeof draft, " draft_n=%lld draft_n_accepted=%lld", static_cast<long long>(log.draft_n),
                  static_cast<long long>(log.draft_n_accepted));
  std::fprintf(stderr, "longhaul serve: %s %s %d prompt_tokens=%lld generated_tokens=%lld ttft=%s total=%.3fs%s\n",
               log.id.c_str(), log.endpoint.c_str(), log.status, static_cast<long long>(log.prompt_tokens),
               static_cast<long long>(log.generated_tokens), ttft, now_seconds() - log.started_at, draft);
}

void Server::Impl::setup_routes() {
  http.set_payload_max_length(static_cast<size_t>(options.max_body_bytes));
  // A connection holds a thread while it streams or idles in keep-alive: enough threads for every running and
  // queued request plus a few for /health and /metrics, so that those answer under load.
  const size_t n_http_threads = static_cast<size_t>(std::min(256, options.max_parallel + options.max_queue + 8));
  http.new_task_queue = [n_http_threads] { return new httplib::ThreadPool(n_http_threads); };
  http.set_read_timeout(options.timeout_seconds, 0);
  http.set_write_timeout(options.timeout_seconds, 0);
  // The API key guards everything but /health (load balancers probe it without credentials).
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    // The chat page is static and holds nothing: its own requests carry the key typed into it.
    if (options.api_key.empty() || req.path == "/health" || req.path == "/")
      return httplib::Server::HandlerResponse::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    if (auth == "Bearer " + options.api_key) return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, ApiError{401,
                             auth.empty() ? "no API key given: send the header 'Authorization: Bearer KEY'"
                                          : "the API key is wrong",
                             "invalid_request_error", "", "invalid_api_key"});
    return httplib::Server::HandlerResponse::Handled;
  });
  // Errors the HTTP layer produces itself (413, 404 for an unknown path, a bad request line) get an OpenAI body.
  http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, error_for_status(res.status));
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, ApiError{500, "internal error: " + what, "server_error", "", ""});
  });
  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    metrics.count_request(endpoint_label(req.path), res.status);
  });

  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (ready) return send_json(res, 200, R"({"status":"ok"})");
    send_json(res, 503, R"({"status":"loading","error":{"message":"the model is loading","type":"unavailable_error","param":null,"code":"unavailable"}})");
  });
  http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    if (auto e = check_ready()) return send_error(res, *e);
    const json m = {{"id", model.id}, {"object", "model"}, {"created", created}, {"owned_by", "longhaul"}};
    send_json(res, 200, dump(json{{"object", "list"}, {"data", json::array({m})}}));
  });
  http.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
    if (auto e = check_ready()) return send_error(res, *e);
    if (auto e = check_model(req.matches[1])) return send_error(res, *e);
    send_json(res, 200, dump(json{{"id", model.id}, {"object", "model"}, {"created", created}, {"owned_by", "longhaul"}}));
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    const SchedulerStats stats = ready && scheduler ? scheduler->stats() : SchedulerStats{};
    res.set_content(metrics.render(stats), "text/plain; version=0.0.4");
  });
  http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    handle_completion(req, res, Endpoint::kChatCompletions);
  });
  http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    handle_completion(req, res, Endpoint::kCompletions);
  });
  http.Post("/v1/embeddings", [this](const httplib::Request& req, httplib::Response& res) { handle_embeddings(req, res); });
  http.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
    if (auto e = check_ready()) return send_error(res, *e);
    TokenizeRequest t;
    if (auto e = parse_tokenize_request(req.body, t)) return send_error(res, *e);
    const std::vector<int32_t> ids = model.tokenizer->encode(t.content, t.add_special, t.parse_special);
    json tokens = json::array();
    for (int32_t id : ids) {
      if (!t.with_pieces) {
        tokens.push_back(id);
        continue;
      }
      tokens.push_back({{"id", id}, {"piece", model.tokenizer->token_to_piece(id, true)}});
    }
    send_json(res, 200, dump(json{{"tokens", tokens}}));
  });
  http.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
    if (auto e = check_ready()) return send_error(res, *e);
    DetokenizeRequest t;
    if (auto e = parse_detokenize_request(req.body, t)) return send_error(res, *e);
    PromptInput input;
    input.is_ids = true;
    input.ids = t.tokens;
    std::vector<int32_t> ids;
    if (!t.tokens.empty())
      if (auto e = prompt_ids(input, "tokens", ids)) return send_error(res, *e);
    send_json(res, 200, dump(json{{"content", model.tokenizer->decode(ids)}}));
  });
}

}  // namespace longhaul::server
