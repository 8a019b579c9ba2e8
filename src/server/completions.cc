// POST /v1/chat/completions and /v1/completions: validate, tokenize, submit the choices to the scheduler, and answer
// with one JSON object or stream Server-Sent Events (OpenAI's chunk shapes, then "data: [DONE]").
#include <algorithm>
#include <ctime>
#include <memory>

#include "base/sys_info.h"
#include "sampling/sampler_chain.h"
#include "server/responses.h"
#include "server/server_impl.h"

namespace longhaul::server {

using json = nlohmann::json;

namespace {

// What one choice has produced so far.
struct ChoiceState {
  std::string pending;     // streamed text held back: a stop string may still begin in it
  int64_t sent_bytes = 0;  // text already streamed
  double last_token_at = -1.0;
  std::optional<Result<generate::GenerateResult>> end;
};

// One HTTP request's completion, shared by its handler and (streaming) its content provider.
struct Exchange {
  Endpoint endpoint = Endpoint::kChatCompletions;
  std::string id;
  int64_t created = 0;
  std::string model_id;
  bool stream = false;
  bool include_usage = false;
  bool logprobs = false;
  size_t holdback = 0;  // bytes of streamed text kept back: the longest stop string's length - 1
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;  // of them, taken from the prefix cache
  std::vector<ChoiceState> choices;
  std::shared_ptr<Channel> channel = std::make_shared<Channel>();
  std::vector<size_t> indices;
  size_t n_ended = 0;
  bool started = false;
  RequestLog log;
};

bool is_chat(const Exchange& ex) { return ex.endpoint == Endpoint::kChatCompletions; }

// A chunk of the stream for one choice: chat's {"delta": ...} or completions' {"text": ...}.
json chunk(const Exchange& ex, int32_t index, const json& delta_or_text, const json& logprobs, const json& finish) {
  json choice = {{"index", index}};
  if (is_chat(ex)) {
    choice["delta"] = delta_or_text;
  } else {
    choice["text"] = delta_or_text;
  }
  choice["logprobs"] = logprobs;
  choice["finish_reason"] = finish;
  json c = {{"id", ex.id},
            {"object", is_chat(ex) ? "chat.completion.chunk" : "text_completion"},
            {"created", ex.created},
            {"model", ex.model_id},
            {"choices", json::array({choice})}};
  if (ex.include_usage) c["usage"] = nullptr;
  return c;
}

std::string sse(const json& j) { return "data: " + dump(j) + "\n\n"; }

// Length of the prefix of `text` that may be sent: all but the last `holdback` bytes, cut back to a character
// boundary (a stop string may begin in the tail; a split character would not be valid JSON text).
size_t sendable(const std::string& text, size_t holdback) {
  if (text.size() <= holdback) return 0;
  size_t cut = text.size() - holdback;
  while (cut > 0 && cut < text.size() && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return cut;
}

// Tokens whose text is part of the reply: all but an end-of-generation token that ended it.
std::span<const generate::TokenLogprob> reply_logprobs(const generate::GenerateResult& r) {
  size_t n = std::min(r.logprobs.size(), r.tokens.size());
  if (r.stop == generate::StopReason::kEndOfGeneration && n == r.tokens.size() && n > 0) --n;
  return std::span<const generate::TokenLogprob>(r.logprobs).first(n);
}

// The error to answer when a choice failed after it was accepted.
ApiError failed_choice(const Status& st) {
  if (st.message() == "cancelled")
    return ApiError{503, "the request was cancelled (the server is shutting down)", "unavailable_error", "", "cancelled"};
  return ApiError{500, "generation failed: " + st.message(), "server_error", "", ""};
}

}  // namespace

void Server::Impl::handle_completion(const httplib::Request& http_req, httplib::Response& res, Endpoint endpoint) {
  auto ex = std::make_shared<Exchange>();
  ex->endpoint = endpoint;
  ex->id = std::string(endpoint == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-") + std::to_string(next_id++);
  ex->created = static_cast<int64_t>(std::time(nullptr));
  ex->log.id = ex->id;
  ex->log.endpoint = http_req.path;
  ex->log.started_at = now_seconds();
  auto fail = [&](const ApiError& e) {
    send_error(res, e);
    ex->log.status = e.status;
    log_request(ex->log);
  };
  if (auto e = check_ready()) return fail(*e);
  CompletionRequest req;
  if (auto e = parse_completion_request(http_req.body, endpoint, req)) return fail(*e);
  if (auto e = check_model(req.model)) return fail(*e);
  ex->model_id = model.id;
  ex->stream = req.stream;
  ex->include_usage = req.include_usage;
  ex->logprobs = req.logprobs;
  for (const std::string& s : req.stop) ex->holdback = std::max(ex->holdback, s.size() - 1);

  const std::string policy = req.kv_policy.value_or(options.default_kv_policy);
  const Result<int32_t> bound = check_kv_policy(policy);
  if (!bound) return fail(bad_request(bound.message(), "kv_policy", "invalid_value"));
  const bool bounded = *bound > 0;  // an evicting policy: any prompt length fits

  // Prompt ids: chat messages through the model's chat format (only its markers become control tokens).
  std::vector<std::vector<int32_t>> prompts;
  if (endpoint == Endpoint::kChatCompletions) {
    prompts.push_back(tokenizer::encode_chat(*model.tokenizer, model.chat_format, req.messages, true));
  } else {
    for (const PromptInput& p : req.prompts) {
      prompts.emplace_back();
      if (auto e = prompt_ids(p, "prompt", prompts.back())) return fail(*e);
    }
  }
  const int32_t n_ctx = model.n_ctx;
  for (const std::vector<int32_t>& ids : prompts) {
    const auto n_prompt = static_cast<int64_t>(ids.size());
    ex->prompt_tokens += n_prompt;
    ex->log.prompt_tokens += n_prompt;
    if (!bounded && n_prompt >= n_ctx)
      return fail(bad_request("the prompt has " + std::to_string(n_prompt) + " tokens, which leaves no room in the context of " +
                                  std::to_string(n_ctx) + " tokens",
                              endpoint == Endpoint::kChatCompletions ? "messages" : "prompt", "context_length_exceeded"));
    if (!bounded && req.max_tokens && n_prompt + *req.max_tokens > n_ctx)
      return fail(bad_request("max_tokens = " + std::to_string(*req.max_tokens) + " with a prompt of " +
                                  std::to_string(n_prompt) + " tokens is past the context of " + std::to_string(n_ctx) +
                                  " tokens (at most " + std::to_string(n_ctx - n_prompt) + ")",
                              "max_tokens", "context_length_exceeded"));
  }

  // Sampling: the server's defaults (its flags), with the request's fields over them.
  sampling::SamplingOptions so = options.sampling;
  if (req.temperature) so.temperature = *req.temperature;
  if (req.top_p) so.top_p = *req.top_p;
  if (req.presence_penalty) so.presence_penalty = *req.presence_penalty;
  if (req.frequency_penalty) so.frequency_penalty = *req.frequency_penalty;
  if (req.seed) so.seed = *req.seed;
  if (Status st = sampling::validate(so); !st) return fail(bad_request(st.message()));

  std::vector<generate::Request> requests;
  for (const std::vector<int32_t>& ids : prompts) {
    const auto first_choice = static_cast<int64_t>(requests.size());
    for (int32_t j = 0; j < req.n; ++j) {
      generate::Request r;
      r.prompt = ids;
      // n > 1: the other choices fork the first one's sequence once its prompt is fed (prefilled once).
      if (j > 0) r.fork_of = first_choice;
      sampling::SamplingOptions choice_so = so;
      // Choices of one seeded request differ from each other and reproduce.
      if (so.seed != sampling::kRandomSeed) choice_so.seed = (so.seed + static_cast<uint32_t>(j)) % sampling::kRandomSeed;
      Result<sampling::SamplerChain> chain = sampling::SamplerChain::create(choice_so);
      if (!chain) return fail(bad_request(chain.message()));
      r.sampler = std::make_shared<sampling::SamplerChain>(std::move(chain).value());
      r.options.n_predict =
          req.max_tokens ? *req.max_tokens : (bounded ? n_ctx : n_ctx - static_cast<int32_t>(ids.size()));
      r.options.stop = req.stop;
      r.options.ignore_eos = req.ignore_eos;
      r.options.top_logprobs = req.logprobs ? req.top_logprobs : -1;
      // A draft step records no log-probabilities, so a request that asks for them decodes plainly.
      if (model.draft && !req.logprobs) {
        r.options.draft = model.draft;
        r.options.draft_max = model.draft_max;
        r.options.draft_min = model.draft_min;
        r.options.draft_adaptive = model.draft_adaptive;
        ex->log.speculative = true;
      }
      r.sequence.kv_policy = policy;
      r.sequence.n_ctx = n_ctx;
      r.sequence.head_profile = model.head_profile;
      r.sequence.prefill_attn = model.prefill_attn;
      requests.push_back(std::move(r));
    }
  }
  ex->choices.resize(requests.size());
  switch (scheduler->submit(std::move(requests), ex->channel, ex->indices)) {
    case Scheduler::Admission::kAccepted: break;
    case Scheduler::Admission::kQueueFull:
      res.set_header("Retry-After", "1");
      return fail(ApiError{429, "the server's queue is full (" + std::to_string(options.max_parallel) + " running, " +
                                    std::to_string(options.max_queue) + " waiting); retry later",
                           "rate_limit_error", "", "rate_limit_exceeded"});
    case Scheduler::Admission::kStopping: return fail(unavailable());
  }

  // Takes one event into the exchange's state (and the metrics); true when it ended a choice.
  auto record = [this](Exchange& x, const ChoiceEvent& e) {
    ChoiceState& c = x.choices[static_cast<size_t>(e.choice)];
    if (e.end) {
      c.end = *e.end;
      ++x.n_ended;
      if (c.end->is_ok()) {
        x.log.generated_tokens += static_cast<int64_t>((*c.end)->tokens.size());
        metrics.add_tokens(0, static_cast<int64_t>((*c.end)->tokens.size()));
        const int32_t n_cached = (*c.end)->timings.n_cached;
        x.cached_tokens += n_cached;
        if (n_cached > 0) metrics.add_prefix_cache(1, n_cached);
        const generate::SpeculativeStats& spec = (*c.end)->speculative;
        x.log.draft_n += spec.n_drafted;
        x.log.draft_n_accepted += spec.n_accepted;
        metrics.add_draft_tokens(spec.n_drafted, spec.n_accepted);
      }
      return true;
    }
    if (e.token >= 0) {
      if (c.last_token_at < 0) {
        metrics.observe_time_to_first_token(e.at - x.log.started_at);
        if (x.log.time_to_first_token < 0) x.log.time_to_first_token = e.at - x.log.started_at;
      } else {
        metrics.observe_inter_token_latency(e.at - c.last_token_at);
      }
      c.last_token_at = e.at;
    }
    return false;
  };
  metrics.add_tokens(ex->prompt_tokens, 0);

  if (!ex->stream) {
    while (ex->n_ended < ex->choices.size()) {
      ChoiceEvent e;
      if (ex->channel->pop(e, 1.0)) record(*ex, e);
    }
    json choices = json::array();
    for (size_t k = 0; k < ex->choices.size(); ++k) {
      const Result<generate::GenerateResult>& r = *ex->choices[k].end;
      if (!r) {
        scheduler->cancel(ex->indices);
        return fail(failed_choice(r.status()));
      }
      json choice = {{"index", k}};
      json logprobs = nullptr;
      if (ex->logprobs)
        logprobs = is_chat(*ex) ? chat_logprobs_json(*model.tokenizer, reply_logprobs(*r))
                                : completion_logprobs_json(*model.tokenizer, reply_logprobs(*r), 0);
      if (is_chat(*ex)) {
        choice["message"] = {{"role", "assistant"}, {"content", r->text}};
      } else {
        choice["text"] = r->text;
      }
      choice["logprobs"] = logprobs;
      choice["finish_reason"] = finish_reason(r->stop);
      choices.push_back(std::move(choice));
    }
    const json body = {{"id", ex->id},
                       {"object", is_chat(*ex) ? "chat.completion" : "text_completion"},
                       {"created", ex->created},
                       {"model", ex->model_id},
                       {"choices", choices},
                       {"usage", usage_json(ex->prompt_tokens, ex->log.generated_tokens, ex->cached_tokens)}};
    send_json(res, 200, dump(body));
    metrics.observe_request_duration(now_seconds() - ex->log.started_at);
    log_request(ex->log);
    return;
  }

  // Streaming: the provider runs on this connection's thread after the handler returns, one call per event.
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, ex, record](size_t, httplib::DataSink& sink) {
        auto write = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
        Exchange& x = *ex;
        if (!x.started) {
          x.started = true;
          if (is_chat(x)) {
            std::string first;
            for (size_t k = 0; k < x.choices.size(); ++k)
              first += sse(chunk(x, static_cast<int32_t>(k), {{"role", "assistant"}, {"content", ""}}, nullptr, nullptr));
            return write(first);
          }
        }
        ChoiceEvent e;
        // Nothing for a second (a long prompt's prefill): an SSE comment, so that a client that went away is found
        // by the failed write and its request cancelled.
        if (!x.channel->pop(e, 1.0)) return write(": keep-alive\n\n");
        const bool ended = record(x, e);
        ChoiceState& c = x.choices[static_cast<size_t>(e.choice)];
        std::string out;
        if (!ended) {
          c.pending += e.text;
          const size_t n = sendable(c.pending, x.holdback);
          json lp = nullptr;
          if (x.logprobs && e.logprob) {
            const generate::TokenLogprob one[1] = {*e.logprob};
            lp = is_chat(x) ? chat_logprobs_json(*model.tokenizer, one)
                            : completion_logprobs_json(*model.tokenizer, one, c.sent_bytes);
          }
          if (n == 0 && lp.is_null()) return true;
          const std::string text = c.pending.substr(0, n);
          c.pending.erase(0, n);
          c.sent_bytes += static_cast<int64_t>(n);
          json delta = is_chat(x) ? json{{"content", text}} : json(text);
          if (!write(sse(chunk(x, e.choice, delta, lp, nullptr)))) return false;
          return true;
        }
        const Result<generate::GenerateResult>& r = *c.end;
        if (!r) {
          out += sse(json::parse(error_json(failed_choice(r.status()))));
        } else {
          // The rest of the final text (cut before a stop string) after what was sent.
          const size_t sent = std::min(static_cast<size_t>(c.sent_bytes), r->text.size());
          const std::string rest = r->text.substr(sent);
          json finish_delta = is_chat(x) ? json::object() : json("");
          if (!rest.empty()) finish_delta = is_chat(x) ? json{{"content", rest}} : json(rest);
          out += sse(chunk(x, e.choice, finish_delta, nullptr, finish_reason(r->stop)));
          c.sent_bytes += static_cast<int64_t>(rest.size());
        }
        if (x.n_ended == x.choices.size()) {
          if (x.include_usage) {
            const json usage = {{"id", x.id},
                                {"object", is_chat(x) ? "chat.completion.chunk" : "text_completion"},
                                {"created", x.created},
                                {"model", x.model_id},
                                {"choices", json::array()},
                                {"usage", usage_json(x.prompt_tokens, x.log.generated_tokens, x.cached_tokens)}};
            out += sse(usage);
          }
          out += "data: [DONE]\n\n";
          if (!write(out)) return false;
          sink.done();
          return true;
        }
        return write(out);
      },
      [this, ex](bool success) {
        // A client that went away (a failed write) or a server that stops: the choices still running end now.
        if (ex->n_ended < ex->choices.size()) {
          scheduler->cancel(ex->indices);
          ex->log.status = 499;  // client closed the request (nginx's code), for the log line
        }
        if (!success && ex->log.status == 200) ex->log.status = 499;
        metrics.observe_request_duration(now_seconds() - ex->log.started_at);
        log_request(ex->log);
      });
}

}  // namespace longhaul::server
