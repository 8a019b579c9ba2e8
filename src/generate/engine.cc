#include "generate/engine.h"

#include <algorithm>
#include <climits>

#include "base/sys_info.h"
#include "kv/policy_registry.h"

namespace longhaul::generate {

namespace {
// Positions stay well inside int32 (RoPE angles and window arithmetic add to them).
constexpr int32_t kMaxPosition = INT32_MAX / 2;
constexpr int32_t kDefaultPageTokens = 256;
}  // namespace

// ---- results ----

const float* StepResult::logits(size_t i, int32_t k) const {
  LH_CHECK_MSG(i + 1 < first_logits.size() && first_logits[i] + k < first_logits[i + 1], "StepResult: no such logits row");
  return data.logits.data() + static_cast<int64_t>(first_logits[i] + k) * n_vocab;
}

const float* StepResult::embedding(size_t i, int32_t k) const {
  LH_CHECK_MSG(i + 1 < first_embedding.size() && first_embedding[i] + k < first_embedding[i + 1],
               "StepResult: no such embedding row");
  return data.embeddings.data() + static_cast<int64_t>(first_embedding[i] + k) * n_embd;
}

// ---- set-up ----

Result<std::unique_ptr<Engine>> Engine::create(const model::Model& model, const EngineOptions& options, ThreadPool* pool) {
  EngineOptions o = options;
  if (o.n_ctx == 0) o.n_ctx = model.config().n_ctx_train;
  if (o.n_ctx < 1 || o.n_ctx > (1 << 24))
    return Status::error("context size " + std::to_string(o.n_ctx) + " is outside [1, 16777216]");
  if (o.skip.n_layer() != 0 && o.skip.n_layer() != model.config().n_layer)
    return Status::error("the sub-layers to skip were chosen for " + std::to_string(o.skip.n_layer()) +
                         " layers, the model has " + std::to_string(model.config().n_layer));
  if (o.n_batch < 1) return Status::error("batch size " + std::to_string(o.n_batch) + " must be >= 1");
  if (o.max_sequences < 1 || o.max_sequences > 4096)
    return Status::error("sequence count " + std::to_string(o.max_sequences) + " is outside [1, 4096]");
  if (o.n_threads < 0 || o.n_threads > 1024)
    return Status::error("thread count " + std::to_string(o.n_threads) + " is outside [0, 1024]");
  if (o.page_tokens < 0 || o.page_tokens > (1 << 20))
    return Status::error("KV page size " + std::to_string(o.page_tokens) + " is outside [0, 1048576]");
  if (o.max_tentative_tokens < 0 || o.max_tentative_tokens > (1 << 16))
    return Status::error("tentative token limit " + std::to_string(o.max_tentative_tokens) + " is outside [0, 65536]");
  kv::KvCacheOptions cache_options;
  cache_options.page_tokens = o.page_tokens > 0 ? o.page_tokens : kDefaultPageTokens;
  cache_options.max_cells = o.n_ctx;
  cache_options.max_sequences = o.max_sequences;
  kv::KvCache cache(model.kv_shape(), cache_options);
  std::unique_ptr<ThreadPool> own;
  if (pool == nullptr) {
    own = std::make_unique<ThreadPool>(o.n_threads > 0 ? o.n_threads : default_thread_count());
    pool = own.get();
  }
  return std::unique_ptr<Engine>(new Engine(model, o, std::move(cache), std::move(own), pool));
}

Engine::Engine(const model::Model& model, const EngineOptions& options, kv::KvCache cache,
               std::unique_ptr<ThreadPool> own, ThreadPool* pool)
    : model_(model), options_(options), cache_(std::move(cache)), own_pool_(std::move(own)), pool_(pool) {}

Engine::~Engine() = default;

Result<kv::SeqId> Engine::add_sequence(const SequenceOptions& options) {
  // The policy as written ("h2o:budget=512:bits=8"): its parameters and the cell storage's.
  LH_ASSIGN_OR_RETURN(kv::BuiltKvPolicy built,
                      kv::make_kv_policy(options.kv_policy, kv_policy_context(model_, options.head_profile)));
  return add_sequence(options, std::move(built.policy), built.storage);
}

Result<kv::SeqId> Engine::add_sequence(const SequenceOptions& options, std::unique_ptr<kv::KvPolicy> policy) {
  LH_CHECK(policy != nullptr);
  // The storage the policy's defaults give: the spec of a policy the registry does not list has nothing to say.
  LH_ASSIGN_OR_RETURN(kv::PolicyParams none, kv::PolicyParams::parse(policy->name()));
  LH_ASSIGN_OR_RETURN(const kv::KvQuantOptions storage, kv::read_kv_storage(none, *policy, model_.kv_shape()));
  return add_sequence(options, std::move(policy), storage);
}

Result<kv::SeqId> Engine::add_sequence(const SequenceOptions& options, std::unique_ptr<kv::KvPolicy> policy,
                                       const kv::KvQuantOptions& storage) {
  const int32_t n_ctx = options.n_ctx > 0 ? options.n_ctx : options_.n_ctx;
  if (n_ctx < 1 || n_ctx > (1 << 24)) return Status::error("context size " + std::to_string(n_ctx) + " is outside [1, 16777216]");
  const std::string& path = model_.file().path();
  LH_RETURN_IF_ERROR(
      model::check_prefill_profile(options.prefill_attn, model_.config(), path.substr(path.find_last_of('/') + 1)));
  kv::KvSequenceOptions so;
  so.page_tokens = options_.page_tokens > 0 ? options_.page_tokens
                   : policy->page_tokens() > 0 ? policy->page_tokens()
                                               : kDefaultPageTokens;
  // A policy that bounds memory sizes the sequence itself (plus room for an undecided tentative step); the others
  // fill the context.
  so.max_cells = policy->max_cells() > 0 ? policy->max_cells() + options_.max_tentative_tokens : n_ctx;
  so.quant = storage;
  LH_ASSIGN_OR_RETURN(const kv::SeqId seq, cache_.add_sequence(so));
  if (slots_.size() <= static_cast<size_t>(seq)) slots_.resize(static_cast<size_t>(seq) + 1);
  Slot& s = slots_[static_cast<size_t>(seq)];
  s = Slot{};
  s.policy = std::move(policy);
  s.n_ctx = n_ctx;
  s.prefill = options.prefill_attn;
  return seq;
}

Result<kv::SeqId> Engine::fork(kv::SeqId parent) {
  const Slot& from = slot(parent);
  if (from.tentative.pending)
    return Status::error("cannot fork sequence " + std::to_string(parent) + ": its tentative step is undecided");
  LH_ASSIGN_OR_RETURN(const kv::SeqId child, cache_.fork_sequence(parent));
  std::unique_ptr<kv::KvPolicy> policy = from.policy->fork(parent, child);
  if (policy == nullptr) {
    cache_.remove_sequence(child);
    return Status::error("KV policy " + from.policy->name() + " cannot fork a sequence");
  }
  if (slots_.size() <= static_cast<size_t>(child)) slots_.resize(static_cast<size_t>(child) + 1);
  Slot& to = slots_[static_cast<size_t>(child)];
  to = Slot{};
  to.policy = std::move(policy);
  to.n_ctx = slot(parent).n_ctx;
  to.prefill = slot(parent).prefill;
  return child;
}

Result<kv::SeqId> Engine::fork(kv::SeqId parent, int32_t n_keep) {
  LH_ASSIGN_OR_RETURN(const kv::SeqId child, fork(parent));
  truncate(child, n_keep);
  return child;
}

void Engine::remove(kv::SeqId seq) {
  slot(seq) = Slot{};
  cache_.remove_sequence(seq);
}

bool Engine::has_sequence(kv::SeqId seq) const {
  return cache_.has_sequence(seq) && static_cast<size_t>(seq) < slots_.size() &&
         slots_[static_cast<size_t>(seq)].policy != nullptr;
}

Engine::Slot& Engine::slot(kv::SeqId seq) {
  LH_CHECK_MSG(has_sequence(seq), "Engine: unknown sequence");
  return slots_[static_cast<size_t>(seq)];
}
const Engine::Slot& Engine::slot(kv::SeqId seq) const {
  LH_CHECK_MSG(has_sequence(seq), "Engine: unknown sequence");
  return slots_[static_cast<size_t>(seq)];
}

int32_t Engine::n_ctx(kv::SeqId seq) const { return slot(seq).n_ctx; }
const kv::KvPolicy& Engine::policy(kv::SeqId seq) const { return *slot(seq).policy; }
const model::PrefillAttentionOptions& Engine::prefill_attention(kv::SeqId seq) const { return slot(seq).prefill; }

std::string Engine::describe_kv(kv::SeqId seq) const {
  std::string out = slot(seq).policy->describe();
  const kv::KvQuantOptions& q = cache_.sequence_options(seq).quant;
  if (q.bits < 16)
    out += "+int" + std::to_string(q.bits) + "(group=" + std::to_string(q.group) + ", residual=" + std::to_string(q.residual) +
           ")";
  return out;
}

void Engine::clear(kv::SeqId seq) {
  reject(seq);  // an undecided tentative step goes first, so that its tokens never count as fed
  Slot& s = slot(seq);
  cache_.clear_sequence(seq);
  s.policy->truncate(cache_, seq, 0);
  s.keys_read = {};
}

void Engine::truncate(kv::SeqId seq, int32_t n_keep) {
  reject(seq);  // an undecided tentative step goes first, so that its tokens never count as fed
  Slot& s = slot(seq);
  // Cells are in position order in every layer; keep those before n_keep. Layers may have evicted different
  // tokens, and every layer must hold the same number of cells, so the smallest count applies (under the full
  // policy: min(n_keep, n_cells)).
  int32_t keep = n_cells(seq);
  for (int32_t il = 0; il < cache_.shape().n_layer; ++il) {
    const std::span<const int32_t> pos = cache_.positions(seq, il);
    keep = std::min(keep, static_cast<int32_t>(std::lower_bound(pos.begin(), pos.end(), n_keep) - pos.begin()));
  }
  cache_.truncate(seq, keep);
  s.policy->truncate(cache_, seq, keep);
}

bool Engine::context_full(kv::SeqId seq, int32_t n_tokens) const {
  if (n_past(seq) > kMaxPosition - n_tokens) return true;
  // Only a policy that does not bound memory can run out of room; the others evict.
  return slot(seq).policy->max_cells() == 0 && cache_.free_cells(seq) < n_tokens;
}

int32_t Engine::max_chunk(kv::SeqId seq) const {
  const int32_t policy_max = slot(seq).policy->max_step_tokens();
  return policy_max > 0 ? std::min(options_.n_batch, policy_max) : options_.n_batch;
}

int32_t Engine::tentative_room(kv::SeqId seq) const {
  const Slot& sl = slot(seq);
  if (sl.tentative.pending) return 0;
  int32_t room = std::min({max_chunk(seq), cache_.free_cells(seq), kMaxPosition - n_past(seq)});
  if (sl.policy->max_cells() > 0) room = std::min(room, options_.max_tentative_tokens);
  return std::max(0, room);
}

bool Engine::has_tentative(kv::SeqId seq) const { return slot(seq).tentative.pending; }

// ---- steps ----

Status Engine::check_step(const SequenceStep& s) const {
  const std::string name = "sequence " + std::to_string(s.seq);
  if (!has_sequence(s.seq)) return Status::error("step names " + name + ", which the engine does not hold");
  const Slot& sl = slot(s.seq);
  if (sl.tentative.pending)
    return Status::error(name + " has an undecided tentative step: accept or reject it first");
  const auto n = static_cast<int32_t>(s.tokens.size());
  if (n == 0) return Status::error("nothing to feed to " + name + ": empty token list");
  if (!s.parents.empty()) {
    if (!s.tentative) return Status::error("a tree of tokens for " + name + " must be a tentative step");
    if (s.parents.size() != s.tokens.size())
      return Status::error(name + ": " + std::to_string(s.parents.size()) + " parents for " + std::to_string(n) + " tokens");
    for (int32_t i = 0; i < n; ++i) {
      const int32_t p = s.parents[static_cast<size_t>(i)];
      if (p != model::kStepRoot && (p < 0 || p >= i))
        return Status::error(name + ": token " + std::to_string(i) + " names parent " + std::to_string(p) +
                             ", which is not an earlier token of the step");
    }
  }
  if (n_past(s.seq) > kMaxPosition - n)
    return Status::error("position " + std::to_string(int64_t{n_past(s.seq)} + n) + " of " + name +
                         " exceeds the limit of " + std::to_string(kMaxPosition));
  if (s.tentative && sl.policy->max_cells() > 0 && n > options_.max_tentative_tokens)
    return Status::error("a tentative step of " + std::to_string(n) + " tokens exceeds the limit of " +
                         std::to_string(options_.max_tentative_tokens) + " for " + name);
  // A tentative step is planned too (step() asks the policy whether it would evict), and accept() may feed it
  // again as an ordinary step: the policy's step limit holds for it as well.
  if (n > max_chunk(s.seq)) {
    return Status::error("a step of " + std::to_string(n) + " tokens for " + name + " exceeds its chunk limit of " +
                         std::to_string(max_chunk(s.seq)));
  }
  // A policy that does not evict has only the context; a tentative step gets no eviction either.
  if (sl.policy->max_cells() == 0 || s.tentative) {
    const int32_t room = cache_.free_cells(s.seq);
    if (room < n) return cache_.check_room(s.seq, n);
  }
  return Status::ok();
}

Status Engine::step(std::span<const SequenceStep> steps, StepResult& result) {
  if (steps.empty()) return Status::error("empty step: no sequence to feed");
  int64_t n_total = 0;
  for (size_t i = 0; i < steps.size(); ++i) {
    LH_RETURN_IF_ERROR(check_step(steps[i]));
    for (size_t j = 0; j < i; ++j)
      if (steps[j].seq == steps[i].seq)
        return Status::error("step names sequence " + std::to_string(steps[i].seq) + " twice");
    n_total += static_cast<int64_t>(steps[i].tokens.size());
  }
  if (n_total > options_.n_batch)
    return Status::error("a step of " + std::to_string(n_total) + " tokens exceeds the batch size of " +
                         std::to_string(options_.n_batch));

  // Between steps: each policy makes room for its tokens, then hears which queries come. A tentative step only
  // records where it starts.
  kv::SeqId max_seq = 0;
  for (const SequenceStep& s : steps) {
    max_seq = std::max(max_seq, s.seq);
    Slot& sl = slot(s.seq);
    kv::StepInfo next;
    next.first_position = n_past(s.seq);
    next.n_tokens = static_cast<int32_t>(s.tokens.size());
    next.starts_feed = s.starts_feed;
    const kv::EvictionPlan plan = sl.policy->plan_eviction(cache_, s.seq, next);
    if (s.tentative) {
      Tentative& t = sl.tentative;
      t.n_cells_before = n_cells(s.seq);
      t.first_position = next.first_position;
      t.starts_feed = s.starts_feed;
      t.passive = !sl.policy->needs_scores() && !plan.changes();
      t.tokens.assign(s.tokens.begin(), s.tokens.end());
      t.parents.assign(s.parents.begin(), s.parents.end());
      continue;
    }
    if (plan.changes()) sl.policy->apply_eviction(plan, cache_, s.seq);
    sl.policy->begin_step(s.seq, next);
  }

  // One batch for every sequence. Tree tokens sit one position after their parent.
  batch_.clear();
  step_policies_.assign(static_cast<size_t>(max_seq) + 1, model::StepPolicy{});
  bool any_tree = false;
  for (const SequenceStep& s : steps) any_tree = any_tree || !s.parents.empty();
  for (const SequenceStep& s : steps) {
    // A tentative step attends densely, each token apart: its logits must be those ordinary steps would give the
    // kept tokens, bit for bit.
    step_policies_[static_cast<size_t>(s.seq)] = {slot(s.seq).policy.get(), !s.tentative,
                                                  s.tentative ? nullptr : &slot(s.seq).prefill, s.tentative};
    const int32_t base = static_cast<int32_t>(batch_.size());
    const int32_t first = n_past(s.seq);
    const auto n = static_cast<int32_t>(s.tokens.size());
    for (int32_t i = 0; i < n; ++i) {
      model::TokenOutput out = model::TokenOutput::kNone;
      const bool last = i == n - 1;
      switch (s.output) {
        case StepOutput::kLastLogits: out = last ? model::TokenOutput::kLogits : model::TokenOutput::kNone; break;
        case StepOutput::kAllLogits: out = model::TokenOutput::kLogits; break;
        case StepOutput::kNone: break;
        case StepOutput::kLastEmbedding: out = last ? model::TokenOutput::kEmbedding : model::TokenOutput::kNone; break;
        case StepOutput::kAllEmbeddings: out = model::TokenOutput::kEmbedding; break;
      }
      const int32_t token = s.tokens[static_cast<size_t>(i)];
      if (!any_tree) {
        batch_.add(token, first + i, s.seq, out, s.prompt && !s.tentative);
        continue;
      }
      const int32_t parent = s.parents.empty() ? (i == 0 ? model::kStepRoot : i - 1) : s.parents[static_cast<size_t>(i)];
      const int32_t position = parent == model::kStepRoot ? first : batch_.positions[static_cast<size_t>(base + parent)] + 1;
      batch_.add_child(token, position, s.seq, out, parent == model::kStepRoot ? model::kStepRoot : base + parent,
                       s.prompt && !s.tentative);
    }
  }

  const Status st = model_.forward(batch_, cache_, state_, *pool_, result.data, step_policies_, options_.skip);
  if (!st.is_ok()) {
    for (const SequenceStep& s : steps)
      if (s.tentative) slot(s.seq).tentative = Tentative{};
    return st;
  }
  for (const SequenceStep& s : steps)
    if (s.tentative) slot(s.seq).tentative.pending = true;
  const std::span<const model::AttentionPlan::KeysRead> keys_read = state_.plan.keys_read();
  for (const SequenceStep& s : steps) {
    if (static_cast<size_t>(s.seq) >= keys_read.size()) continue;
    slot(s.seq).keys_read.read += keys_read[static_cast<size_t>(s.seq)].read;
    slot(s.seq).keys_read.held += keys_read[static_cast<size_t>(s.seq)].held;
  }

  // Output rows per sequence step.
  result.n_vocab = model_.config().n_vocab;
  result.n_embd = model_.config().n_embd;
  result.first_logits.assign(1, 0);
  result.first_embedding.assign(1, 0);
  int32_t t = 0;
  for (const SequenceStep& s : steps) {
    int32_t n_logits = 0, n_embeddings = 0;
    for (size_t i = 0; i < s.tokens.size(); ++i, ++t) {
      n_logits += batch_.outputs[static_cast<size_t>(t)] == model::TokenOutput::kLogits;
      n_embeddings += batch_.outputs[static_cast<size_t>(t)] == model::TokenOutput::kEmbedding;
    }
    result.first_logits.push_back(result.first_logits.back() + n_logits);
    result.first_embedding.push_back(result.first_embedding.back() + n_embeddings);
  }
  return Status::ok();
}

Status Engine::accept_first(kv::SeqId seq, int32_t k) {
  const Tentative& t = slot(seq).tentative;
  if (!t.pending) return Status::error("sequence " + std::to_string(seq) + " has no tentative step to accept");
  if (k < 0 || k > static_cast<int32_t>(t.tokens.size()))
    return Status::error("cannot accept " + std::to_string(k) + " of a tentative step of " +
                         std::to_string(t.tokens.size()) + " tokens");
  std::vector<int32_t> path(static_cast<size_t>(k));
  for (int32_t i = 0; i < k; ++i) path[static_cast<size_t>(i)] = i;
  return accept(seq, path);
}

Status Engine::accept(kv::SeqId seq, std::span<const int32_t> path) {
  Slot& sl = slot(seq);
  if (!sl.tentative.pending) return Status::error("sequence " + std::to_string(seq) + " has no tentative step to accept");
  const Tentative t = std::move(sl.tentative);
  sl.tentative = Tentative{};
  const auto n = static_cast<int32_t>(t.tokens.size());
  auto parent_of = [&](int32_t i) { return t.parents.empty() ? i - 1 : t.parents[static_cast<size_t>(i)]; };
  for (size_t i = 0; i < path.size(); ++i) {
    const int32_t node = path[i];
    const int32_t want_parent = i == 0 ? model::kStepRoot : path[i - 1];
    if (node < 0 || node >= n || parent_of(node) != want_parent) {
      // Leave the step undecided, as it was.
      sl.tentative = t;
      return Status::error("accepted path is not a chain of the tentative step: token " + std::to_string(node) +
                           " at place " + std::to_string(i));
    }
  }
  const auto k = static_cast<int32_t>(path.size());
  if (t.passive || k == 0) {
    // The policy saw nothing of the step and needed no room for it: the path's cells are exactly what an ordinary
    // step would have written. Drop the others, then tell the policy about the tokens it kept.
    bool prefix = true;
    for (int32_t i = 0; i < k; ++i) prefix = prefix && path[static_cast<size_t>(i)] == i;
    if (!prefix) {
      std::vector<int32_t> keep(static_cast<size_t>(t.n_cells_before + k));
      for (int32_t c = 0; c < t.n_cells_before; ++c) keep[static_cast<size_t>(c)] = c;
      for (int32_t i = 0; i < k; ++i)
        keep[static_cast<size_t>(t.n_cells_before + i)] = t.n_cells_before + path[static_cast<size_t>(i)];
      for (int32_t il = 0; il < cache_.shape().n_layer; ++il) cache_.retain_cells(seq, il, keep);
    }
    cache_.truncate(seq, t.n_cells_before + k);  // also rewinds the next position past the kept tokens
    sl.policy->truncate(cache_, seq, t.n_cells_before + k);
    if (k > 0) sl.policy->begin_step(seq, {t.first_position, k, t.starts_feed});
    return Status::ok();
  }
  // The policy must observe the kept tokens (or evict for them) as an ordinary step would: drop the step and feed
  // the path again.
  cache_.truncate(seq, t.n_cells_before);
  sl.policy->truncate(cache_, seq, t.n_cells_before);
  std::vector<int32_t> tokens(static_cast<size_t>(k));
  for (int32_t i = 0; i < k; ++i) tokens[static_cast<size_t>(i)] = t.tokens[static_cast<size_t>(path[static_cast<size_t>(i)])];
  return feed_chunks(seq, tokens, t.starts_feed, false, nullptr, nullptr, nullptr);
}

Status Engine::feed(kv::SeqId seq, std::span<const int32_t> tokens, std::vector<float>* last_logits,
                    std::vector<float>* all_logits, const ProgressFn& progress) {
  // A feed of more than one token is a prompt (as SnapKV hears it); one token is a decode step's.
  return feed_chunks(seq, tokens, true, tokens.size() > 1, last_logits, all_logits, progress);
}

Status Engine::feed_chunks(kv::SeqId seq, std::span<const int32_t> tokens, bool starts_feed, bool prompt,
                           std::vector<float>* last_logits, std::vector<float>* all_logits, const ProgressFn& progress) {
  if (tokens.empty()) return Status::error("nothing to feed: empty token list");
  const auto n_total = static_cast<int32_t>(std::min<size_t>(tokens.size(), INT32_MAX));
  if (context_full(seq, n_total)) {
    LH_RETURN_IF_ERROR(cache_.check_room(seq, n_total));
    return Status::error("position " + std::to_string(int64_t{n_past(seq)} + n_total) + " exceeds the limit of " +
                         std::to_string(kMaxPosition));
  }
  const int32_t n_vocab = model_.config().n_vocab;
  if (all_logits != nullptr) all_logits->resize(static_cast<size_t>(n_total) * n_vocab);
  const int32_t chunk = max_chunk(seq);
  for (int32_t begin = 0; begin < n_total; begin += chunk) {
    const int32_t end = std::min(n_total, begin + chunk);
    SequenceStep s;
    s.seq = seq;
    s.tokens = tokens.subspan(static_cast<size_t>(begin), static_cast<size_t>(end - begin));
    s.output = all_logits != nullptr ? StepOutput::kAllLogits
               : end == n_total && last_logits != nullptr ? StepOutput::kLastLogits
                                                          : StepOutput::kNone;
    s.starts_feed = begin == 0 && starts_feed;
    s.prompt = prompt;
    LH_RETURN_IF_ERROR(step({&s, 1}, feed_result_));
    if (all_logits != nullptr)
      std::copy(feed_result_.data.logits.begin(), feed_result_.data.logits.end(),
                all_logits->begin() + static_cast<int64_t>(begin) * n_vocab);
    if (end == n_total && last_logits != nullptr) {
      const float* last = feed_result_.logits(0, s.output == StepOutput::kAllLogits ? end - begin - 1 : 0);
      last_logits->assign(last, last + n_vocab);
    }
    if (progress && !progress(end, n_total) && end < n_total)
      return Status::error("cancelled after " + std::to_string(end) + " of " + std::to_string(n_total) + " tokens");
  }
  return Status::ok();
}

void Engine::reject(kv::SeqId seq) {
  Slot& sl = slot(seq);
  if (!sl.tentative.pending) return;
  const int32_t n_before = sl.tentative.n_cells_before;
  sl.tentative = Tentative{};
  cache_.truncate(seq, n_before);
  sl.policy->truncate(cache_, seq, n_before);
}

// ---- policies ----

kv::KvPolicyContext kv_policy_context(const model::Model& model, std::shared_ptr<const kv::HeadProfile> head_profile) {
  const model::ModelConfig& cfg = model.config();
  kv::KvPolicyContext context;
  context.shape = model.kv_shape();
  context.head_profile = std::move(head_profile);
  context.rope.resize(static_cast<size_t>(cfg.n_layer));
  for (int32_t il = 0; il < cfg.n_layer; ++il) {
    kv::RopeSpec& r = context.rope[static_cast<size_t>(il)];
    r.n_rot = cfg.n_rot;
    r.style = cfg.rope_style;
    // As Model::forward: local (sliding-window) layers use their own base and no scaling.
    const bool local = cfg.is_local(il);
    r.freq_base = local ? cfg.rope_freq_base_local : cfg.rope_freq_base;
    r.freq_scale = local ? 1.0f : cfg.rope_freq_scale;
  }
  context.layer_window.resize(static_cast<size_t>(cfg.n_layer));
  for (int32_t il = 0; il < cfg.n_layer; ++il)
    context.layer_window[static_cast<size_t>(il)] = cfg.is_local(il) ? cfg.sliding_window : 0;
  return context;
}

}  // namespace longhaul::generate
