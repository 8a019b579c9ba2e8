// POST /v1/embeddings: each input is a request of the generation loop that only prefills, pooling the final
// normalised hidden states (mean or last token, --pooling); the result is L2-normalised, as OpenAI's embeddings
// are (unit length, so a dot product is the cosine similarity).
#include <cmath>
#include <cstring>

#include "base/sys_info.h"
#include "server/responses.h"
#include "server/server_impl.h"

namespace longhaul::server {

using json = nlohmann::json;

namespace {

std::string base64(const void* data, size_t n) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto* p = static_cast<const unsigned char*>(data);
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  for (size_t i = 0; i < n; i += 3) {
    const uint32_t b = (uint32_t{p[i]} << 16) | (i + 1 < n ? uint32_t{p[i + 1]} << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
    out += kAlphabet[(b >> 18) & 63];
    out += kAlphabet[(b >> 12) & 63];
    out += i + 1 < n ? kAlphabet[(b >> 6) & 63] : '=';
    out += i + 2 < n ? kAlphabet[b & 63] : '=';
  }
  return out;
}

}  // namespace

void Server::Impl::handle_embeddings(const httplib::Request& http_req, httplib::Response& res) {
  RequestLog log;
  log.id = "embd-" + std::to_string(next_id++);
  log.endpoint = http_req.path;
  log.started_at = now_seconds();
  auto fail = [&](const ApiError& e) {
    send_error(res, e);
    log.status = e.status;
    log_request(log);
  };
  if (auto e = check_ready()) return fail(*e);
  EmbeddingRequest req;
  if (auto e = parse_embedding_request(http_req.body, req)) return fail(*e);
  if (auto e = check_model(req.model)) return fail(*e);

  std::vector<generate::Request> requests;
  for (const PromptInput& input : req.inputs) {
    generate::Request r;
    if (auto e = prompt_ids(input, "input", r.prompt)) return fail(*e);
    if (static_cast<int64_t>(r.prompt.size()) > model.n_ctx)
      return fail(bad_request("an input has " + std::to_string(r.prompt.size()) + " tokens, more than the context of " +
                                  std::to_string(model.n_ctx),
                              "input", "context_length_exceeded"));
    log.prompt_tokens += static_cast<int64_t>(r.prompt.size());
    r.pooling = options.pooling;
    r.sequence.kv_policy = "full";
    r.sequence.n_ctx = model.n_ctx;
    r.options.n_predict = 0;
    r.kv_reserve_bytes = static_cast<int64_t>(r.prompt.size()) * model.engine->cache().bytes_per_cell();
    requests.push_back(std::move(r));
  }
  auto channel = std::make_shared<Channel>();
  std::vector<size_t> indices;
  const size_t n = requests.size();
  switch (scheduler->submit(std::move(requests), channel, indices)) {
    case Scheduler::Admission::kAccepted: break;
    case Scheduler::Admission::kQueueFull:
      res.set_header("Retry-After", "1");
      return fail(ApiError{429, "the server's queue is full; retry later", "rate_limit_error", "", "rate_limit_exceeded"});
    case Scheduler::Admission::kStopping: return fail(unavailable());
  }
  std::vector<std::optional<Result<generate::GenerateResult>>> ends(n);
  for (size_t n_ended = 0; n_ended < n;) {
    ChoiceEvent e;
    if (!channel->pop(e, 1.0) || !e.end) continue;
    ends[static_cast<size_t>(e.choice)] = std::move(e.end);
    ++n_ended;
  }
  json data = json::array();
  for (size_t i = 0; i < n; ++i) {
    const Result<generate::GenerateResult>& r = *ends[i];
    if (!r) {
      scheduler->cancel(indices);
      return fail(ApiError{r.message() == "cancelled" ? 503 : 500, "embedding failed: " + r.message(),
                           r.message() == "cancelled" ? "unavailable_error" : "server_error", "", ""});
    }
    std::vector<float> v = r->embedding;
    double norm = 0.0;
    for (float x : v) norm += static_cast<double>(x) * x;
    norm = std::sqrt(norm);
    if (norm > 0)
      for (float& x : v) x = static_cast<float>(x / norm);
    json item = {{"object", "embedding"}, {"index", i}};
    if (req.base64) {
      item["embedding"] = base64(v.data(), v.size() * sizeof(float));  // little-endian float32, as OpenAI's
    } else {
      item["embedding"] = v;
    }
    data.push_back(std::move(item));
  }
  metrics.add_tokens(log.prompt_tokens, 0);
  send_json(res, 200,
            dump(json{{"object", "list"},
                      {"data", data},
                      {"model", model.id},
                      {"usage", {{"prompt_tokens", log.prompt_tokens}, {"total_tokens", log.prompt_tokens}}}}));
  metrics.observe_request_duration(now_seconds() - log.started_at);
  log_request(log);
}

}  // namespace longhaul::server
