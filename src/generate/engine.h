// An Engine runs one model over many sequences: one KV cache holding all of them (forked sequences share their
// prefix pages), one KV policy object per sequence (its own statistics and parameters), and forward steps that
// each carry tokens of any number of sequences: prefill chunks of some, decode tokens of others, a draft tree of
// another. Everything above it — the generation loop, `longhaul batch`, the server, speculative decoding — drives
// sequences through step().
//
// A step, per sequence (the KvPolicy protocol of kv/kv_policy.h):
//   1. plan_eviction + apply_eviction make room for the sequence's tokens, then begin_step announces them;
//   2. one Model::forward for every sequence of the step; policies that need scores observe them.
// A tentative sequence step (speculative decoding) skips 1 and its policy observes nothing; afterwards accept()
// keeps a path of its tokens or reject() drops them all, leaving the policy exactly as if only the kept tokens had
// been fed (see accept).
//
// Thread-safety: one thread drives an engine: every non-const call, and const calls while no step runs. A
// ThreadPool given to several engines (a draft and a target model) is used by whichever engine steps, so those
// engines must be stepped from one thread, one at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "kv/kv_cache.h"
#include "kv/kv_policy.h"
#include "model/model.h"
#include "model/sparse_prefill.h"

namespace longhaul::generate {

struct EngineOptions {
  int32_t n_ctx = 4096;        // default context size of a sequence in tokens (0 = the model's training context)
  int32_t n_batch = 512;       // most tokens one step carries (prefill chunks are cut to fit)
  int32_t max_sequences = 16;  // sequences live at once (forks included)
  int32_t n_threads = 0;       // threads of the engine's own pool, caller included (0 = all cores this process may
                               // use); ignored when a pool is given to create()
  int32_t page_tokens = 0;     // KV cells per page (0 = the sequence's policy's choice, else 256)
  // Cells beyond its policy's budget a bounded sequence may hold while a tentative step is undecided: a tentative
  // step does not evict, so its tokens need room of their own. Also the most tokens one tentative step brings to a
  // bounded sequence.
  int32_t max_tentative_tokens = 64;
  // Sub-layers every step of the engine leaves out (model/sublayers.h): a pruned model (--prune-sublayers) or the
  // draft of self-speculation, over the same loaded model. Empty = the whole model.
  model::SublayerSkip skip;
};

// How a sequence stores and evicts its KV cells.
struct SequenceOptions {
  // KV policy as written: "name" or "name:key=value:...", its parameters and the cell storage's
  // (kv/policy_params.h, kv/policy_registry.h), e.g. "h2o:budget=512:bits=8".
  std::string kv_policy = "full";
  int32_t n_ctx = 0;  // context size in tokens (0 = the engine's)
  // The model's head profile, for the policies that read one (duo): a model-level input, not a key=value (a path
  // may hold ':'). Null = none given.
  std::shared_ptr<const kv::HeadProfile> head_profile;
  // How the sequence's long prompt chunks attend (--prefill-attn): dense, or MInference, HiP or HyperAttention sparse
  // prefill (model/sparse_prefill.h). Independent of the KV policy; tentative steps are always dense.
  model::PrefillAttentionOptions prefill_attn;
};

// What a step returns for a sequence's tokens.
enum class StepOutput {
  kLastLogits,      // logits of the last token (the usual prefill / decode step)
  kAllLogits,       // logits of every token (perplexity, speculative verification)
  kNone,            // nothing (a prefill chunk that is not the prompt's last)
  kLastEmbedding,   // final normalised hidden state of the last token
  kAllEmbeddings,   // final normalised hidden state of every token
};

// One sequence's share of a step.
struct SequenceStep {
  kv::SeqId seq = -1;
  std::span<const int32_t> tokens;  // fed after the sequence's cached tokens
  StepOutput output = StepOutput::kLastLogits;
  // Empty: the tokens form a chain. Otherwise [tokens.size()]: the index (within `tokens`) of each token's parent
  // (an earlier one), or model::kStepRoot for a token that follows the cached tokens: a tree of drafts, each token
  // seeing only its ancestors; the step must then be tentative.
  std::span<const int32_t> parents;
  bool tentative = false;    // speculative: no eviction, no observation; resolve with accept() or reject()
  bool starts_feed = false;  // the first chunk of a new prompt (policies that listen to a prompt's end: SnapKV)
  // The tokens are a prompt's (a feed of more than one token; not tentative): their weight products may take the
  // ISA's prompt kernels (kernels::MatmulRows), whose bits differ from the decode kernels' but are a token's own in
  // any step. Generated tokens, drafts and re-fed accepted tokens keep the decode kernels.
  bool prompt = false;
};

// Called after each prefill chunk with (tokens done, tokens total); returning false cancels the rest of the feed
// (the tokens fed so far stay).
using ProgressFn = std::function<bool(int64_t, int64_t)>;

// The outputs of one step, in the order of the SequenceStep list and of each one's tokens.
struct StepResult {
  model::Model::Outputs data;           // logits [n_logits, n_vocab], embeddings [n_embeddings, n_embd]
  std::vector<int32_t> first_logits;    // [n_steps + 1] row of each sequence step's first logits
  std::vector<int32_t> first_embedding;  // [n_steps + 1]
  int32_t n_vocab = 0;
  int32_t n_embd = 0;

  // Logits [n_vocab] of the k-th token of sequence step i that returns logits (k = 0 for kLastLogits).
  const float* logits(size_t i, int32_t k = 0) const;
  const float* embedding(size_t i, int32_t k = 0) const;
};

class Engine {
 public:
  // pool: shared with other engines (not owned; must outlive the engine), or null for a pool of its own.
  static Result<std::unique_ptr<Engine>> create(const model::Model& model, const EngineOptions& options,
                                                ThreadPool* pool = nullptr);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // A new empty sequence with its own KV policy; fails for an unknown policy, bad parameters or when
  // max_sequences are live.
  Result<kv::SeqId> add_sequence(const SequenceOptions& options);
  // With a policy object the registry does not list (e.g. the head calibration's scorer), stored as the
  // policy's defaults say (options.kv_policy is not read).
  Result<kv::SeqId> add_sequence(const SequenceOptions& options, std::unique_ptr<kv::KvPolicy> policy);
  // A new sequence holding `parent`'s tokens: its pages are shared (copy on write), its policy a fork of the
  // parent's. Fails when the parent's policy cannot fork or has an undecided tentative step.
  Result<kv::SeqId> fork(kv::SeqId parent);
  // The same, cut to the parent's tokens at positions < n_keep (as truncate): a prefix cache's hit takes the
  // cached part of a longer sequence. The pages up to the cut stay shared; a page the cut splits is shared too
  // and copied when the child first writes to it.
  Result<kv::SeqId> fork(kv::SeqId parent, int32_t n_keep);
  void remove(kv::SeqId seq);
  bool has_sequence(kv::SeqId seq) const;
  // Forgets the sequence's tokens (the pages stay for reuse) and its policy's state.
  void clear(kv::SeqId seq);
  // Keeps the tokens at positions < n_keep (under the full policy, the first n_keep).
  void truncate(kv::SeqId seq, int32_t n_keep);

  // Runs one step over the listed sequences (each at most once). Fails, changing nothing, for an unknown or
  // repeated sequence, an empty token list, more than n_batch tokens, a chunk larger than the policy's
  // max_step_tokens, a full context (context_full), or a sequence with an undecided tentative step.
  Status step(std::span<const SequenceStep> steps, StepResult& result);

  // Feeds `tokens` to one sequence alone, in chunks of max_chunk(seq) tokens (the first starts a feed), checking
  // the context first. last_logits (may be null): the logits [n_vocab] of the last token. all_logits (may be
  // null): [n_tokens, n_vocab] of every token. Fails with "cancelled" when progress returns false.
  Status feed(kv::SeqId seq, std::span<const int32_t> tokens, std::vector<float>* last_logits,
              std::vector<float>* all_logits = nullptr, const ProgressFn& progress = nullptr);

  // After a tentative step of `seq`: keep the tokens on `path` (indices into that step's tokens, each the parent
  // of the next, the first a root; for a chain, 0 .. k-1) and drop the others. The sequence and its policy end as
  // if exactly the path's tokens had been fed by an ordinary step. For a policy that neither observes scores nor
  // needed to evict for those tokens, the step's cells are kept as they are; otherwise they are dropped and the
  // path is fed again as an ordinary step (the cost of an exact policy state).
  Status accept(kv::SeqId seq, std::span<const int32_t> path);
  // Keeps the first k tokens of a tentative chain step.
  Status accept_first(kv::SeqId seq, int32_t k);
  // Drops a tentative step's tokens: the sequence and its policy are as before it.
  void reject(kv::SeqId seq);
  bool has_tentative(kv::SeqId seq) const;

  // True when `n_tokens` more do not fit: the policy does not evict and the context is used up. The one
  // "context full" rule; step() fails with its message.
  bool context_full(kv::SeqId seq, int32_t n_tokens = 1) const;
  // Most tokens one step may bring to `seq` (n_batch, or less when its policy needs smaller chunks).
  int32_t max_chunk(kv::SeqId seq) const;
  // Most tokens a tentative step of `seq` may carry now (the limits step() checks: its chunk limit, the free cells
  // a step without eviction needs, max_tentative_tokens for a bounded policy); 0 while a tentative step is
  // undecided.
  int32_t tentative_room(kv::SeqId seq) const;

  // Tokens fed to the sequence so far (its next position); cells it holds per layer; its context size.
  int32_t n_past(kv::SeqId seq) const { return cache_.next_position(seq); }
  int32_t n_cells(kv::SeqId seq) const { return cache_.n_cells(seq, 0); }
  int32_t n_ctx(kv::SeqId seq) const;
  const kv::KvPolicy& policy(kv::SeqId seq) const;
  const model::PrefillAttentionOptions& prefill_attention(kv::SeqId seq) const;
  // Key cells the sequence's decode tokens have read so far, and the cells held when they read them, summed over
  // layers and KV heads (model::AttentionPlan::count_keys_read): read / held is the share of its KV cache a decode
  // token reads. Counted from the sequence's creation (or clear()).
  model::AttentionPlan::KeysRead keys_read(kv::SeqId seq) const { return slot(seq).keys_read; }
  // The policy's describe() plus the cell storage when quantized, e.g. "full+int8(group=32, residual=128)".
  std::string describe_kv(kv::SeqId seq) const;

  const model::Model& model() const { return model_; }
  const kv::KvCache& cache() const { return cache_; }
  const EngineOptions& options() const { return options_; }
  ThreadPool& pool() { return *pool_; }
  int32_t n_threads() const { return pool_->n_threads(); }

 private:
  Result<kv::SeqId> add_sequence(const SequenceOptions& options, std::unique_ptr<kv::KvPolicy> policy,
                                 const kv::KvQuantOptions& storage);
  struct Tentative {
    bool pending = false;
    int32_t n_cells_before = 0;  // cells per layer before the step
    int32_t first_position = 0;
    bool starts_feed = false;
    bool passive = false;  // the policy observes nothing and its plan for the step evicted nothing
    std::vector<int32_t> tokens;
    std::vector<int32_t> parents;
  };
  struct Slot {
    std::unique_ptr<kv::KvPolicy> policy;
    int32_t n_ctx = 0;
    model::PrefillAttentionOptions prefill;
    Tentative tentative;
    model::AttentionPlan::KeysRead keys_read;
  };

  Engine(const model::Model& model, const EngineOptions& options, kv::KvCache cache, std::unique_ptr<ThreadPool> own,
         ThreadPool* pool);
  Slot& slot(kv::SeqId seq);
  const Slot& slot(kv::SeqId seq) const;
  Status check_step(const SequenceStep& s) const;
  Status feed_chunks(kv::SeqId seq, std::span<const int32_t> tokens, bool starts_feed, bool prompt,
                     std::vector<float>* last_logits, std::vector<float>* all_logits, const ProgressFn& progress);

  const model::Model& model_;
  EngineOptions options_;
  kv::KvCache cache_;
  std::unique_ptr<ThreadPool> own_pool_;
  ThreadPool* pool_;
  std::vector<Slot> slots_;  // [SeqId]
  model::ForwardState state_;
  model::Batch batch_;
  std::vector<model::StepPolicy> step_policies_;  // [SeqId] of the running step
  StepResult feed_result_;                        // outputs of feed()'s steps
};

// What a KV policy needs to know about `model` (cache shape, per-layer RoPE and window), with its head profile.
kv::KvPolicyContext kv_policy_context(const model::Model& model,
                                      std::shared_ptr<const kv::HeadProfile> head_profile = nullptr);

}  // namespace longhaul::generate
