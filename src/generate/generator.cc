#include "generate/generator.h"

#include <algorithm>

#include "base/sys_info.h"

namespace longhaul::generate {

const char* stop_reason_name(StopReason reason) {
  switch (reason) {
    case StopReason::kEndOfGeneration: return "eos";
    case StopReason::kLength: return "length";
    case StopReason::kContextFull: return "context";
    case StopReason::kCallback: return "stopped";
    case StopReason::kStopString: return "stop";
  }
  return "?";
}

// A request between its start and its end.
struct Generator::Live {
  size_t index = 0;
  kv::SeqId seq = -1;
  bool own_sequence = false;        // created for the request: removed at its end
  std::span<const int32_t> prompt;  // the request's prompt
  int32_t n_fed = 0;                // prompt tokens fed so far
  int32_t pending = -1;             // a sampled token still to feed (decode), or -1
  double started_at = 0.0;
  double first_token_at = 0.0;
  GenerateResult result;
  tokenizer::StreamingDecoder decoder;
  Live(const tokenizer::Tokenizer& tokenizer) : decoder(tokenizer) {}
};

Generator::Generator(Engine& engine, const tokenizer::Tokenizer& tokenizer, int32_t max_parallel)
    : engine_(engine), tokenizer_(tokenizer), max_parallel_(std::max(1, max_parallel)) {}

Generator::~Generator() = default;

size_t Generator::submit(Request request) {
  requests_.push_back(std::move(request));
  results_.emplace_back(Status::error("not run"));
  final_logits_.emplace_back();
  submitted_at_.push_back(now_seconds());
  waiting_.push_back(requests_.size() - 1);
  return requests_.size() - 1;
}

void Generator::finish(Live& live, Result<GenerateResult> result) {
  if (result.is_ok()) {
    GenerateResult& r = *result;
    // Bytes of an incomplete character at the end come out as they are (unless a stop string cut the text).
    if (r.stop != StopReason::kStopString) {
      const std::string rest = live.decoder.flush();
      r.text += rest;
      const Request& req = requests_[live.index];
      if (req.on_text && !rest.empty()) req.on_text(rest);
    }
    r.timings.n_generated = static_cast<int32_t>(r.tokens.size());
    r.timings.generate_seconds = live.first_token_at > 0 ? now_seconds() - live.first_token_at : 0.0;
  }
  if (live.own_sequence && engine_.has_sequence(live.seq)) engine_.remove(live.seq);
  results_[live.index] = std::move(result);
  ++n_done_;
  if (on_done_) on_done_(live.index, results_[live.index]);
}

// Starts request `index`: its sequence, its sampler's history, its first logits when it has no prompt. An error
// here is the request's, not the loop's.
Status Generator::start(size_t index) {
  Request& req = requests_[index];
  auto live = std::make_unique<Live>(tokenizer_);
  live->index = index;
  live->started_at = now_seconds();
  live->prompt = req.prompt;
  live->result.queued_seconds = live->started_at - submitted_at_[index];
  live->result.timings.n_prompt = static_cast<int32_t>(req.prompt.size());
  auto fail = [&](const Status& st) {
    finish(*live, st);
    return Status::ok();
  };
  if (req.sampler == nullptr) return fail(Status::error("request has no sampler"));
  if (req.seq >= 0) {
    if (!engine_.has_sequence(req.seq)) return fail(Status::error("request names an unknown sequence"));
    live->seq = req.seq;
  } else {
    Result<kv::SeqId> seq = engine_.add_sequence(req.sequence);
    if (!seq.is_ok()) return fail(seq.status());
    live->seq = *seq;
    live->own_sequence = true;
  }
  if (req.prompt.empty()) {
    if (engine_.n_past(live->seq) == 0 || req.last_logits.size() != static_cast<size_t>(engine_.model().config().n_vocab))
      return fail(Status::error("empty prompt: give at least one token"));
  } else if (engine_.context_full(live->seq, static_cast<int32_t>(req.prompt.size()))) {
    return fail(Status::error("prompt of " + std::to_string(req.prompt.size()) + " tokens does not fit: " +
                              engine_.cache().check_room(live->seq, static_cast<int32_t>(req.prompt.size())).message()));
  }
  for (int32_t t : req.prompt) req.sampler->accept(t);
  Live& l = *live;
  live_.push_back(std::move(live));
  if (req.prompt.empty()) {
    l.first_token_at = now_seconds();
    if (take_token(l, req.last_logits.data())) {
      finish(l, std::move(l.result));
      live_.pop_back();
    }
  }
  return Status::ok();
}

bool Generator::take_token(Live& live, const float* logits) {
  Request& req = requests_[live.index];
  GenerateResult& r = live.result;
  const int32_t n_vocab = engine_.model().config().n_vocab;
  // Only a request on a caller's sequence (a Session) hands its last logits back: copying n_vocab floats per token
  // for every batch request would be work nobody reads.
  if (req.seq >= 0) final_logits_[live.index].assign(logits, logits + n_vocab);
  const int32_t token = req.sampler->sample(logits, n_vocab);
  req.sampler->accept(token);
  r.tokens.push_back(token);
  ++n_generated_;
  const GenerateOptions& o = req.options;
  if (!o.ignore_eos && tokenizer_.is_end_of_generation(token)) {
    r.stop = StopReason::kEndOfGeneration;
    return true;
  }
  const std::string piece = live.decoder.push(token);
  r.text += piece;
  if (!o.stop.empty()) {
    // Only the tail that this piece can complete needs searching.
    size_t longest = 0;
    for (const std::string& s : o.stop) longest = std::max(longest, s.size());
    const size_t from = r.text.size() > piece.size() + longest ? r.text.size() - piece.size() - longest : 0;
    size_t cut = std::string::npos;
    for (const std::string& s : o.stop)
      if (!s.empty()) cut = std::min(cut, r.text.find(s, from));
    if (cut != std::string::npos) {
      r.text.resize(cut);
      r.stop = StopReason::kStopString;
      return true;
    }
  }
  if (req.on_text && !piece.empty() && !req.on_text(piece)) {
    r.stop = StopReason::kCallback;
    return true;
  }
  const bool length = o.n_predict >= 0 && static_cast<int32_t>(r.tokens.size()) >= o.n_predict;
  if (o.done && o.done(r.text)) {
    r.stop = length ? StopReason::kLength : StopReason::kCallback;
    return true;
  }
  if (length) {
    r.stop = StopReason::kLength;
    return true;
  }
  if (engine_.context_full(live.seq)) {
    r.stop = StopReason::kContextFull;
    return true;
  }
  live.pending = token;
  return false;
}

Status Generator::run(const std::function<void(size_t, const Result<GenerateResult>&)>& on_done,
                      const std::function<void(size_t, int64_t)>& on_step) {
  on_done_ = on_done;
  std::vector<SequenceStep> steps;
  std::vector<Live*> step_live;  // [steps.size()]
  StepResult out;
  const int32_t n_batch = engine_.options().n_batch;
  while (!waiting_.empty() || !live_.empty()) {
    // Admit waiting requests into free places.
    while (!waiting_.empty() && static_cast<int32_t>(live_.size()) < max_parallel_) {
      const size_t index = waiting_.front();
      waiting_.pop_front();
      LH_RETURN_IF_ERROR(start(index));
    }
    if (live_.empty()) continue;

    // One step: a decode token of every generating request, then prefill chunks in admission order.
    steps.clear();
    step_live.clear();
    int32_t budget = n_batch;
    for (auto& l : live_) {
      if (l->pending < 0 || budget == 0) continue;
      SequenceStep s;
      s.seq = l->seq;
      s.tokens = std::span<const int32_t>(&l->pending, 1);
      steps.push_back(s);
      step_live.push_back(l.get());
      --budget;
    }
    for (auto& l : live_) {
      if (l->pending >= 0 || budget == 0) continue;
      const auto n_prompt = static_cast<int32_t>(l->prompt.size());
      const int32_t chunk = std::min({n_prompt - l->n_fed, budget, engine_.max_chunk(l->seq)});
      if (chunk <= 0) continue;
      SequenceStep s;
      s.seq = l->seq;
      s.tokens = l->prompt.subspan(static_cast<size_t>(l->n_fed), static_cast<size_t>(chunk));
      s.output = l->n_fed + chunk == n_prompt ? StepOutput::kLastLogits : StepOutput::kNone;
      s.starts_feed = l->n_fed == 0;
      steps.push_back(s);
      step_live.push_back(l.get());
      budget -= chunk;
    }
    LH_RETURN_IF_ERROR(engine_.step(steps, out));

    // Sample where the step produced logits; finish what is done.
    std::vector<Live*> finished;
    for (size_t i = 0; i < steps.size(); ++i) {
      Live& l = *step_live[i];
      if (l.pending >= 0) {
        l.pending = -1;
        if (take_token(l, out.logits(i))) finished.push_back(&l);
        continue;
      }
      l.n_fed += static_cast<int32_t>(steps[i].tokens.size());
      const auto n_prompt = static_cast<int32_t>(l.prompt.size());
      const Request& req = requests_[l.index];
      if (req.progress && !req.progress(l.n_fed, n_prompt) && l.n_fed < n_prompt) {
        finish(l, Status::error("cancelled after " + std::to_string(l.n_fed) + " of " + std::to_string(n_prompt) +
                                " prompt tokens"));
        l.seq = -1;  // finished: marks it for removal below
        continue;
      }
      if (l.n_fed < n_prompt) continue;
      l.first_token_at = now_seconds();
      l.result.timings.prompt_seconds = l.first_token_at - l.started_at;
      if (take_token(l, out.logits(i))) finished.push_back(&l);
    }
    for (Live* l : finished) {
      finish(*l, std::move(l->result));
      l->seq = -1;
    }
    live_.erase(std::remove_if(live_.begin(), live_.end(), [](const auto& l) { return l->seq < 0; }), live_.end());
    if (on_step) on_step(n_done_, n_generated_);
  }
  return Status::ok();
}

// Session's access to its last logits, for the loop that ran on its sequence.
class SessionLogits {
 public:
  static std::vector<float>& of(Session& session) { return session.logits_; }
};

Result<GenerateResult> generate(Session& session, const tokenizer::Tokenizer& tokenizer,
                                sampling::SamplerChain& sampler, std::span<const int32_t> prompt,
                                const GenerateOptions& options, const TextFn& on_text, const ProgressFn& progress) {
  Generator generator(session.engine(), tokenizer, 1);
  Request req;
  req.prompt.assign(prompt.begin(), prompt.end());
  req.sampler = std::shared_ptr<sampling::SamplerChain>(&sampler, [](sampling::SamplerChain*) {});  // borrowed
  req.options = options;
  req.on_text = on_text;
  req.progress = progress;
  req.seq = session.sequence();
  if (prompt.empty()) req.last_logits = SessionLogits::of(session);
  generator.submit(std::move(req));
  LH_RETURN_IF_ERROR(generator.run());
  if (!generator.final_logits(0).empty()) SessionLogits::of(session) = generator.final_logits(0);
  return std::move(generator.result(0));
}

}  // namespace longhaul::generate
