#include "generate/generator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "base/sys_info.h"
#include "generate/speculative/verify.h"

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
  // Speculative decoding (a request with a draft source).
  std::vector<int32_t> text;     // the prompt, then the generated tokens: what the source reads
  speculative::Draft draft;      // the source's proposal
  std::vector<int32_t> fed;      // [1 + draft] this step's tokens: the pending token, then the draft
  std::vector<int32_t> parents;  // [1 + draft] each one's parent within `fed` (-1 for the pending token)
  bool tree = false;             // the draft branches (the engine gets `parents`)
  // Acceptance per draft node and evidence class, measured on this request (GenerateOptions::draft_adaptive; null
  // otherwise).
  std::unique_ptr<speculative::DraftAcceptanceByClass> acceptance;
  double draft_token_seconds = 0.0;  // the source's time per proposed node, decayed mean (draft, self: a forward step)
  int32_t n_proposals = 0;           // propose() calls so far
  std::vector<double> pooled;    // an embedding request's sum (mean) or last row (last) [n_embd]
  Live(const tokenizer::Tokenizer& tokenizer) : decoder(tokenizer) {}
};

Generator::Generator(Engine& engine, const tokenizer::Tokenizer& tokenizer, int32_t max_parallel)
    : engine_(engine), tokenizer_(tokenizer), max_parallel_(std::max(1, max_parallel)) {}

Generator::~Generator() = default;

size_t Generator::submit(Request request) {
  Entry entry;
  entry.submitted_at = now_seconds();
  entry.request = std::move(request);
  size_t index = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    index = next_index_++;
    inbox_.emplace_back(index, std::move(entry));
  }
  work_.notify_all();
  return index;
}

void Generator::cancel(size_t index) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    cancelled_.push_back(index);
  }
  work_.notify_all();
}

void Generator::wake() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    woken_ = true;
  }
  work_.notify_all();
}

bool Generator::wait_for_work(double seconds) {
  std::unique_lock<std::mutex> lock(mutex_);
  work_.wait_for(lock, std::chrono::duration<double>(seconds),
                 [&] { return woken_ || !inbox_.empty() || !cancelled_.empty() || !waiting_.empty() || !live_.empty(); });
  woken_ = false;
  return !inbox_.empty() || !cancelled_.empty() || !waiting_.empty() || !live_.empty();
}

bool Generator::busy() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return !inbox_.empty() || !cancelled_.empty() || !waiting_.empty() || !live_.empty();
}

void Generator::take_submissions() {
  std::vector<std::pair<size_t, Entry>> inbox;
  std::vector<size_t> cancelled;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    inbox.swap(inbox_);
    cancelled.swap(cancelled_);
  }
  for (auto& [index, entry] : inbox) {
    entries_.emplace(index, std::move(entry));
    waiting_.push_back(index);
  }
  for (size_t index : cancelled) {
    const Status gone = Status::error("cancelled");
    if (auto w = std::find(waiting_.begin(), waiting_.end(), index); w != waiting_.end()) {
      waiting_.erase(w);
      Live live(tokenizer_);
      live.index = index;
      finish(live, gone);
      continue;
    }
    for (auto& l : live_) {
      if (l->index != index || l->seq < 0) continue;
      // Its sequence is removed now, so the next step does not carry it and its pages are free.
      finish(*l, gone);
      l->seq = -1;
    }
  }
  live_.erase(std::remove_if(live_.begin(), live_.end(), [](const auto& l) { return l->seq < 0; }), live_.end());
}

int64_t Generator::reserve_bytes(const Request& req) const {
  if (req.kv_reserve_bytes > 0) return req.kv_reserve_bytes;
  const int32_t n_ctx = req.sequence.n_ctx > 0 ? req.sequence.n_ctx : engine_.options().n_ctx;
  const int64_t n_generate = req.options.n_predict >= 0 ? req.options.n_predict : n_ctx;
  const int64_t n_tokens = std::min<int64_t>(n_ctx, static_cast<int64_t>(req.prompt.size()) + n_generate);
  return n_tokens * engine_.cache().bytes_per_cell();
}

void Generator::finish(Live& live, Result<GenerateResult> result) {
  Entry& entry = entries_.at(live.index);
  const Request& req = entry.request;
  if (result.is_ok()) {
    GenerateResult& r = *result;
    // Bytes of an incomplete character at the end come out as they are (unless a stop string cut the text).
    if (r.stop != StopReason::kStopString) {
      const std::string rest = live.decoder.flush();
      r.text += rest;
      if (req.on_text && !rest.empty()) req.on_text(rest);
      if (req.on_token && !rest.empty()) req.on_token({-1, rest, nullptr});
    }
    r.timings.n_generated = static_cast<int32_t>(r.tokens.size());
    r.timings.generate_seconds = live.first_token_at > 0 ? now_seconds() - live.first_token_at : 0.0;
  }
  if (req.options.draft && live.seq >= 0) req.options.draft->end(live.index);
  if (live.own_sequence && live.seq >= 0 && engine_.has_sequence(live.seq)) {
    if (prefix_cache_ != nullptr && req.use_prefix_cache) {
      // The sequence holds the prompt and every generated token but the last (never fed): the next turn of a
      // chat starts with them. The cache keeps the sequence itself or removes it.
      std::vector<int32_t> held(live.prompt.begin(), live.prompt.end());
      if (result.is_ok()) held.insert(held.end(), result->tokens.begin(), result->tokens.end());
      prefix_cache_->insert(live.seq, held, /*adopt=*/true);
    } else {
      engine_.remove(live.seq);
    }
  }
  kv_reserved_bytes_ -= entry.reserve_bytes;  // 0 when it never started
  entry.reserve_bytes = 0;
  entry.result = std::move(result);
  ++n_done_;
  if (entry.request.on_end) entry.request.on_end(entry.result);
  if (on_done_) on_done_(live.index, entry.result);
  if (!keep_results_) entries_.erase(live.index);
}

// Starts request `index`: its sequence, its sampler's history, its first logits when it has no prompt. An error
// here is the request's, not the loop's.
Status Generator::start(size_t index) {
  Entry& entry = entries_.at(index);
  Request& req = entry.request;
  auto live = std::make_unique<Live>(tokenizer_);
  live->index = index;
  live->started_at = now_seconds();
  live->prompt = req.prompt;
  live->result.queued_seconds = live->started_at - entry.submitted_at;
  live->result.timings.n_prompt = static_cast<int32_t>(req.prompt.size());
  auto fail = [&](const Status& st) {
    finish(*live, st);
    return Status::ok();
  };
  if (req.sampler == nullptr && req.pooling == Pooling::kNone) return fail(Status::error("request has no sampler"));
  if (req.seq >= 0) {
    if (!engine_.has_sequence(req.seq)) return fail(Status::error("request names an unknown sequence"));
    live->seq = req.seq;
  } else {
    if (prefix_cache_ != nullptr) prefix_cache_->make_room_for_sequence();
    Result<kv::SeqId> seq = engine_.add_sequence(req.sequence);
    if (!seq.is_ok()) return fail(seq.status());
    live->seq = *seq;
    live->own_sequence = true;
  }
  entry.reserve_bytes = reserve_bytes(req);
  kv_reserved_bytes_ += entry.reserve_bytes;
  if (req.pooling != Pooling::kNone) {
    if (req.prompt.empty()) return fail(Status::error("empty input: nothing to embed"));
    if (engine_.context_full(live->seq, static_cast<int32_t>(req.prompt.size())))
      return fail(Status::error("input of " + std::to_string(req.prompt.size()) + " tokens does not fit the context of " +
                                std::to_string(engine_.n_ctx(live->seq))));
    live->pooled.assign(static_cast<size_t>(engine_.model().config().n_embd), 0.0);
    live_.push_back(std::move(live));
    return Status::ok();
  }
  if (req.prompt.empty()) {
    if (engine_.n_past(live->seq) == 0 || req.last_logits.size() != static_cast<size_t>(engine_.model().config().n_vocab))
      return fail(Status::error("empty prompt: give at least one token"));
  } else if (engine_.context_full(live->seq, static_cast<int32_t>(req.prompt.size()))) {
    return fail(Status::error("prompt of " + std::to_string(req.prompt.size()) + " tokens does not fit: " +
                              engine_.cache().check_room(live->seq, static_cast<int32_t>(req.prompt.size())).message()));
  }
  if (prefix_cache_ != nullptr && req.use_prefix_cache && live->own_sequence) {
    // A cached prefix: the sequence becomes a fork of it, and the prefill starts after it.
    Result<int32_t> cached = prefix_cache_->reuse(live->seq, req.prompt);
    if (!cached.is_ok()) return fail(cached.status());
    live->n_fed = *cached;
    live->result.timings.n_cached = *cached;
  }
  for (int32_t t : req.prompt) req.sampler->accept(t);
  start_draft(*live, req);
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

bool Generator::waits_for_fork(size_t index) const {
  const Request& req = entries_.at(index).request;
  if (req.fork_of < 0) return false;
  for (const auto& l : live_)
    if (static_cast<int64_t>(l->index) == req.fork_of)
      return l->seq >= 0 && l->pending < 0 && l->n_fed < static_cast<int32_t>(l->prompt.size());
  return false;  // that request is not running (not started, or ended): start on its own
}

void Generator::start_draft(Live& live, const Request& req) {
  if (!req.options.draft) return;
  live.text = req.options.draft_context;
  live.text.insert(live.text.end(), req.prompt.begin(), req.prompt.end());
  if (req.options.draft_adaptive)
    live.acceptance = std::make_unique<speculative::DraftAcceptanceByClass>(std::max(1, req.options.draft_max));
}

bool Generator::start_fork(size_t index, Live& parent, const float* logits) {
  Entry& entry = entries_.at(index);
  Request& req = entry.request;
  if (req.sampler == nullptr || req.seq >= 0 ||
      !std::ranges::equal(req.prompt, parent.prompt))
    return false;
  Result<kv::SeqId> seq = engine_.fork(parent.seq);
  if (!seq.is_ok()) return false;
  waiting_.erase(std::find(waiting_.begin(), waiting_.end(), index));
  auto live = std::make_unique<Live>(tokenizer_);
  live->index = index;
  live->seq = *seq;
  live->own_sequence = true;
  live->started_at = parent.started_at;
  live->prompt = req.prompt;
  live->n_fed = static_cast<int32_t>(req.prompt.size());
  live->first_token_at = parent.first_token_at;
  live->result.queued_seconds = std::max(0.0, parent.started_at - entry.submitted_at);
  live->result.timings.n_prompt = static_cast<int32_t>(req.prompt.size());
  live->result.timings.prompt_seconds = parent.result.timings.prompt_seconds;
  entry.reserve_bytes = reserve_bytes(req);
  kv_reserved_bytes_ += entry.reserve_bytes;
  for (int32_t t : req.prompt) req.sampler->accept(t);
  start_draft(*live, req);
  Live& l = *live;
  live_.push_back(std::move(live));
  // As for the request it forks: its source sees the prompt's last logits before its first proposal.
  if (req.options.draft) observe(l, l.prompt.last(1), {}, logits, 0);
  if (take_token(l, logits)) {
    finish(l, std::move(l.result));
    l.seq = -1;  // removed with the step's finished requests
  }
  return true;
}

void Generator::record_logprobs(Live& live, const float* logits, int32_t token) {
  const int32_t k = std::min(entries_.at(live.index).request.options.top_logprobs, kMaxTopLogprobs);
  if (k < 0) return;
  const int32_t n_vocab = engine_.model().config().n_vocab;
  // log p_i = z_i - max - log(sum_j exp(z_j - max)), in double for the sum over the vocabulary.
  const float max_logit = *std::max_element(logits, logits + n_vocab);
  double sum = 0.0;
  for (int32_t i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - max_logit));
  const double log_norm = static_cast<double>(max_logit) + std::log(sum);
  TokenLogprob lp;
  lp.token = token;
  lp.logprob = static_cast<float>(logits[token] - log_norm);
  if (k > 0) {
    std::vector<int32_t> ids(static_cast<size_t>(n_vocab));
    std::iota(ids.begin(), ids.end(), 0);
    // Ties broken by id so the order is reproducible.
    auto more_likely = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), more_likely);
    for (int32_t i = 0; i < k; ++i)
      lp.top.emplace_back(ids[static_cast<size_t>(i)], static_cast<float>(logits[ids[static_cast<size_t>(i)]] - log_norm));
  }
  live.result.logprobs.push_back(std::move(lp));
}

bool Generator::take_token(Live& live, const float* logits) {
  Entry& entry = entries_.at(live.index);
  Request& req = entry.request;
  const int32_t n_vocab = engine_.model().config().n_vocab;
  // Only a request on a caller's sequence (a Session) hands its last logits back: copying n_vocab floats per token
  // for every batch request would be work nobody reads.
  if (req.seq >= 0) entry.final_logits.assign(logits, logits + n_vocab);
  const int32_t token = req.sampler->sample(logits, n_vocab);
  req.sampler->accept(token);
  record_logprobs(live, logits, token);
  if (emit(live, token)) return true;
  if (engine_.context_full(live.seq)) {
    live.result.stop = StopReason::kContextFull;
    return true;
  }
  live.pending = token;
  return false;
}

bool Generator::emit(Live& live, int32_t token) {
  Request& req = entries_.at(live.index).request;
  GenerateResult& r = live.result;
  r.tokens.push_back(token);
  if (req.options.draft) live.text.push_back(token);
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
  if (req.on_token) {
    const TokenLogprob* lp = r.logprobs.size() == r.tokens.size() ? &r.logprobs.back() : nullptr;
    if (!req.on_token({token, piece, lp})) {
      r.stop = StopReason::kCallback;
      return true;
    }
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
  return false;
}

bool Generator::plan_draft(Live& live, int32_t budget, int32_t n_other_tokens, int32_t n_other_outputs) {
  const GenerateOptions& o = entries_.at(live.index).request.options;
  if (!o.draft) return false;
  // The step carries the pending token and the draft; drafting past the tokens still to generate is wasted work
  // (the step emits at most draft + 1).
  int32_t n_max = std::min({o.draft_max, budget - 1, engine_.tentative_room(live.seq) - 1});
  if (o.n_predict >= 0) n_max = std::min(n_max, o.n_predict - static_cast<int32_t>(live.result.tokens.size()) - 1);
  const int32_t n_min = std::max(1, o.draft_min);
  // Adaptive lengths: a source whose proposal costs next to nothing against a step (tables, lookups; measured)
  // proposes up to the cap, and its draft is cut to the length chosen knowing the draft's shape and evidence
  // class; any other (a draft model, self) is asked for the chosen length only, from the estimates of class 0.
  const bool adaptive = live.acceptance != nullptr;
  const bool cut_after = adaptive && live.n_proposals >= 2 &&
                         live.draft_token_seconds * n_max < 0.01 * step_cost_.seconds(1);
  if (adaptive && !cut_after && n_max >= n_min)
    n_max = speculative::choose_draft_length(live.acceptance->of(0), step_cost_, n_max, n_other_tokens,
                                             n_other_outputs, live.draft_token_seconds, {}, draft_estimates_);
  if (n_max < n_min) {
    // The estimates age: those of the last draft's class (0 for a source without classes).
    if (adaptive) live.acceptance->observe(live.draft.evidence, 0, {}, {});
    return false;
  }
  live.draft.clear();
  const double propose_started = now_seconds();
  o.draft->propose({live.index, live.text}, n_max, live.draft);
  auto n = static_cast<int32_t>(live.draft.size());
  // The first proposal is not timed: a draft model reads the whole prompt in it.
  if (n > 0 && live.n_proposals++ > 0) {
    const double per_node = (now_seconds() - propose_started) / n;
    live.draft_token_seconds =
        live.draft_token_seconds > 0 ? 0.8 * live.draft_token_seconds + 0.2 * per_node : per_node;
  }
  LH_CHECK_MSG(n <= n_max && (live.draft.parents.empty() || live.draft.parents.size() == live.draft.tokens.size()),
               "draft source " + o.draft->name() + " broke its contract: " + std::to_string(n) + " tokens for at most " +
                   std::to_string(n_max));
  const int32_t n_proposed = n;
  if (cut_after && n > 0) {
    // Parents come before their children, so the first k nodes are a draft of their own.
    n = speculative::choose_draft_length(live.acceptance->of(live.draft.evidence), step_cost_, n, n_other_tokens,
                                         n_other_outputs, live.draft_token_seconds, live.draft.parents,
                                         draft_estimates_, live.acceptance->prior_of(live.draft.evidence));
    live.draft.tokens.resize(static_cast<size_t>(n));
    if (!live.draft.parents.empty()) live.draft.parents.resize(static_cast<size_t>(n));
  }
  if (n < n_min) {
    // A proposal cut to nothing ages its class's estimates; nothing proposed (no match) has no class to age.
    if (adaptive && (n_proposed > 0 || !cut_after)) live.acceptance->observe(live.draft.evidence, 0, {}, {});
    return false;
  }
  live.tree = !live.draft.parents.empty();
  live.fed.assign(1, live.pending);
  live.fed.insert(live.fed.end(), live.draft.tokens.begin(), live.draft.tokens.end());
  live.parents.assign(1, model::kStepRoot);
  for (int32_t i = 0; i < n; ++i) {
    const int32_t p = live.tree ? live.draft.parents[static_cast<size_t>(i)] : i - 1;
    LH_CHECK_MSG(p >= speculative::kDraftRoot && p < i, "draft source " + o.draft->name() + ": token " +
                                                            std::to_string(i) + " names parent " + std::to_string(p));
    live.parents.push_back(p + 1);  // the draft's root follows the pending token, node 0
  }
  return true;
}

void Generator::observe(Live& live, std::span<const int32_t> tokens, std::span<const int32_t> parents,
                        const float* logits, int32_t n_accepted, std::span<const int32_t> path, size_t n_text) {
  speculative::VerifiedStep step;
  step.tokens = tokens;
  step.parents = parents;
  step.logits = logits;
  step.n_vocab = engine_.model().config().n_vocab;
  step.n_accepted = n_accepted;
  step.path = path;
  const std::span<const int32_t> text = std::span<const int32_t>(live.text).first(std::min(n_text, live.text.size()));
  entries_.at(live.index).request.options.draft->observe({live.index, text}, step);
}

Status Generator::take_verified(Live& live, const StepResult& out, size_t i, bool& finished) {
  Entry& entry = entries_.at(live.index);
  Request& req = entry.request;
  const int32_t n_vocab = engine_.model().config().n_vocab;
  finished = false;
  const size_t n_text_before = live.text.size();  // the text up to the pending token, as observe() shows it
  const speculative::Verification v = speculative::verify_tree(
      live.fed, live.parents, [&](int32_t node) { return out.logits(i, node); }, n_vocab, *req.sampler,
      [&](int32_t token) {
        finished = emit(live, token);
        return !finished;
      });
  SpeculativeStats& stats = live.result.speculative;
  stats.n_drafted += static_cast<int64_t>(live.fed.size()) - 1;
  stats.n_accepted += v.n_accepted;
  if (live.acceptance) {
    // The path's draft nodes are fed indices 1..: draft node i is fed node i + 1.
    accepted_nodes_.clear();
    for (size_t k = 1; k < v.path.size(); ++k) accepted_nodes_.push_back(v.path[k] - 1);
    live.acceptance->observe(live.draft.evidence, static_cast<int32_t>(live.draft.size()), live.draft.parents,
                             accepted_nodes_);
  }
  // The cache keeps the pending token and the accepted draft tokens the walk went on from.
  LH_RETURN_IF_ERROR(engine_.accept(live.seq, v.path));
  observe(live, live.fed, live.parents, out.logits(i, 0), v.n_accepted, v.path, n_text_before);
  if (req.seq >= 0) entry.final_logits.assign(out.logits(i, v.last_node), out.logits(i, v.last_node) + n_vocab);
  // As take_token, once the cache holds what plain decoding would: the step fitted, so only the last token's
  // successor can lack room.
  if (!finished && engine_.context_full(live.seq)) {
    live.result.stop = StopReason::kContextFull;
    finished = true;
  }
  if (!finished) live.pending = live.result.tokens.back();
  return Status::ok();
}

void Generator::pool_embeddings(Live& live, const StepResult& out, size_t i, int32_t n_tokens) {
  const Pooling pooling = entries_.at(live.index).request.pooling;
  const size_t n_embd = live.pooled.size();
  if (pooling == Pooling::kMean) {
    for (int32_t k = 0; k < n_tokens; ++k) {
      const float* row = out.embedding(i, k);
      for (size_t d = 0; d < n_embd; ++d) live.pooled[d] += row[d];
    }
  } else if (live.n_fed == static_cast<int32_t>(live.prompt.size())) {
    const float* row = out.embedding(i, 0);
    for (size_t d = 0; d < n_embd; ++d) live.pooled[d] = row[d];
  }
}

Status Generator::run(const DoneFn& on_done, const std::function<void(size_t, int64_t)>& on_step) {
  on_done_ = on_done;
  while (busy()) {
    LH_RETURN_IF_ERROR(step());
    if (on_step) on_step(n_done_, n_generated_);
  }
  return Status::ok();
}

Status Generator::step() {
  take_submissions();
  // Admit waiting requests into free places in order, while their KV reservations fit the budget; a request that
  // will fork another's prompt waits for it without holding up the ones behind it.
  for (auto it = waiting_.begin(); it != waiting_.end() && static_cast<int32_t>(live_.size()) < max_parallel_;) {
    const size_t index = *it;
    if (waits_for_fork(index)) {
      ++it;
      continue;
    }
    if (kv_budget_bytes_ > 0 && !live_.empty() &&
        kv_reserved_bytes_ + reserve_bytes(entries_.at(index).request) > kv_budget_bytes_)
      break;
    it = waiting_.erase(it);
    const size_t offset = static_cast<size_t>(it - waiting_.begin());
    LH_RETURN_IF_ERROR(start(index));  // may finish requests, never touches waiting_
    it = waiting_.begin() + static_cast<std::ptrdiff_t>(offset);
  }
  last_step_tokens_ = 0;
  if (live_.empty()) return Status::ok();

  // One step: a decode token of every generating request, then prefill chunks in admission order.
  std::vector<SequenceStep>& steps = steps_;
  std::vector<Live*>& step_live = step_live_;
  StepResult& out = out_;
  steps.clear();
  step_live.clear();
  int32_t budget = engine_.options().n_batch;
  const auto n_decoding =
      static_cast<int32_t>(std::count_if(live_.begin(), live_.end(), [](const auto& l) { return l->pending >= 0; }));
  int32_t n_decodes_planned = 0;
  for (auto& l : live_) {
    if (l->pending < 0 || budget == 0) continue;
    SequenceStep s;
    s.seq = l->seq;
    s.tokens = std::span<const int32_t>(&l->pending, 1);
    // A draft shares the step with the tokens planned so far and the decode token of each sequence still to plan.
    const int32_t n_other_tokens = (engine_.options().n_batch - budget) + (n_decoding - n_decodes_planned - 1);
    ++n_decodes_planned;
    if (plan_draft(*l, budget, n_other_tokens, n_decoding - 1)) {
      s.tokens = l->fed;
      if (l->tree) s.parents = l->parents;
      s.tentative = true;
      s.output = StepOutput::kAllLogits;
    }
    steps.push_back(s);
    step_live.push_back(l.get());
    budget -= static_cast<int32_t>(s.tokens.size());
  }
  for (auto& l : live_) {
    if (l->pending >= 0 || budget == 0) continue;
    const auto n_prompt = static_cast<int32_t>(l->prompt.size());
    const int32_t chunk = std::min({n_prompt - l->n_fed, budget, engine_.max_chunk(l->seq)});
    if (chunk <= 0) continue;
    SequenceStep s;
    s.seq = l->seq;
    s.tokens = l->prompt.subspan(static_cast<size_t>(l->n_fed), static_cast<size_t>(chunk));
    const bool last_chunk = l->n_fed + chunk == n_prompt;
    switch (entries_.at(l->index).request.pooling) {
      case Pooling::kNone: s.output = last_chunk ? StepOutput::kLastLogits : StepOutput::kNone; break;
      case Pooling::kMean: s.output = StepOutput::kAllEmbeddings; break;
      case Pooling::kLast: s.output = last_chunk ? StepOutput::kLastEmbedding : StepOutput::kNone; break;
    }
    s.starts_feed = l->n_fed == l->result.timings.n_cached;
    s.prompt = n_prompt > 1;  // as Engine::feed: a prompt of one token is fed as a decode step is
    steps.push_back(s);
    step_live.push_back(l.get());
    budget -= chunk;
  }
  last_step_tokens_ = engine_.options().n_batch - budget;
  const double step_started = now_seconds();
  Status step_status = engine_.step(steps, out);
  if (Status st = std::move(step_status); !st.is_ok()) {
    // The step changed nothing; its requests cannot go on, the loop can (an open-ended caller keeps serving).
    for (Live* l : step_live) {
      finish(*l, Status::error("step failed: " + st.message()));
      l->seq = -1;
    }
    live_.erase(std::remove_if(live_.begin(), live_.end(), [](const auto& l) { return l->seq < 0; }), live_.end());
    return st;
  }

  // Sample where the step produced logits; finish what is done.
  std::vector<Live*> finished;
  for (size_t i = 0; i < steps.size(); ++i) {
    Live& l = *step_live[i];
    const Request& req = entries_.at(l.index).request;
    if (l.pending >= 0) {
      if (req.options.draft) ++l.result.speculative.n_steps;
      if (steps[i].tentative) {
        l.pending = -1;
        bool done = false;
        LH_RETURN_IF_ERROR(take_verified(l, out, i, done));
        if (done) finished.push_back(&l);
        continue;
      }
      if (req.options.draft) observe(l, steps[i].tokens, {}, out.logits(i), 0);
      l.pending = -1;
      if (take_token(l, out.logits(i))) finished.push_back(&l);
      continue;
    }
    const auto n_chunk = static_cast<int32_t>(steps[i].tokens.size());
    l.n_fed += n_chunk;
    const auto n_prompt = static_cast<int32_t>(l.prompt.size());
    if (req.pooling != Pooling::kNone) {
      pool_embeddings(l, out, i, n_chunk);
      if (l.n_fed < n_prompt) continue;
      l.result.embedding.resize(l.pooled.size());
      const double scale = req.pooling == Pooling::kMean ? 1.0 / n_prompt : 1.0;
      for (size_t d = 0; d < l.pooled.size(); ++d) l.result.embedding[d] = static_cast<float>(l.pooled[d] * scale);
      l.result.timings.prompt_seconds = now_seconds() - l.started_at;
      l.result.stop = StopReason::kLength;
      finished.push_back(&l);
      continue;
    }
    if (req.progress && !req.progress(l.n_fed, n_prompt) && l.n_fed < n_prompt) {
      finish(l, Status::error("cancelled after " + std::to_string(l.n_fed) + " of " + std::to_string(n_prompt) +
                              " prompt tokens"));
      l.seq = -1;  // finished: marks it for removal below
      continue;
    }
    if (l.n_fed < n_prompt) continue;
    // Later requests with the same prompt start can share it while this one generates.
    if (prefix_cache_ != nullptr && req.use_prefix_cache) prefix_cache_->insert(l.seq, l.prompt);
    l.first_token_at = now_seconds();
    l.result.timings.prompt_seconds = l.first_token_at - l.started_at;
    // Choices waiting for this prompt start now as forks of its sequence.
    for (auto w = waiting_.begin(); w != waiting_.end() && static_cast<int32_t>(live_.size()) < max_parallel_;) {
      const size_t child = *w;
      ++w;
      if (entries_.at(child).request.fork_of == static_cast<int64_t>(l.index)) {
        const size_t offset = static_cast<size_t>(w - waiting_.begin());
        const bool forked = start_fork(child, l, out.logits(i));
        w = waiting_.begin() + static_cast<std::ptrdiff_t>(offset - (forked ? 1 : 0));
      }
    }
    if (req.options.draft) observe(l, l.prompt.last(1), {}, out.logits(i), 0);
    if (take_token(l, out.logits(i))) finished.push_back(&l);
  }
  // What a step of this size costs the loop: the forward step and the work its outputs bring after it (sampling,
  // verification, a draft source's observation). Over Gemma 3's 262K-token vocabulary that work added about half
  // of the forward step's cost per extra token (Token Recycling takes the top-k of every node's logits), and drafts
  // sized by the forward step alone were longer than worth verifying.
  step_cost_.add(last_step_tokens_, now_seconds() - step_started);
  for (Live* l : finished) {
    finish(*l, std::move(l->result));
    l->seq = -1;
  }
  live_.erase(std::remove_if(live_.begin(), live_.end(), [](const auto& l) { return l->seq < 0; }), live_.end());
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
