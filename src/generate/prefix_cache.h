// PrefixCache: KV cells of earlier prompts kept for later requests that start with the same tokens — a repeated
// system prompt, a few-shot preamble, the next turn of a chat — so those requests feed only what follows.
//
// A radix tree over token blocks, one block per KV page (the sequence's page_tokens), as vLLM's automatic prefix
// caching and SGLang's RadixAttention (Zheng et al., 2024) organise theirs; one tree per way of storing a sequence
// (policy, cell storage, context size, prefill attention), since only those agree on what a cell holds. The cells
// themselves are never copied: the cache holds "donor" sequences of the engine, each cut to whole blocks, and every
// node names a donor that holds the node's whole path. A hit forks the donor at the matched length
// (Engine::fork(parent, n_keep)): the new sequence shares the donor's pages (reference-counted, copied on write,
// counted once in KvCache::used_bytes), and because the cut is at a page boundary its first append starts a page of
// its own. A new path is stored by forking the request's sequence cut to its whole blocks; the nodes it covers then
// name that donor, and a donor no node names any more is removed.
//
// Eviction drops the least recently used leaf block and cuts its donor back to the deepest block still naming it
// (or removes the donor), which frees the pages no live sequence shares. It runs when the cache exceeds max_blocks,
// when a donor must make way for a new sequence (release_sequence), and whenever a caller under memory pressure asks
// (evict_lru_block, trim).
//
// Only a sequence whose policy shares_prefix() (kv/kv_policy.h: every token stays at its cell and position) is
// cached or served from the cache; the others pass through untouched.
//
// Thread-safety: none of its own. It drives the engine, so it runs on the engine's thread, between steps.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "generate/engine.h"

namespace longhaul::generate {

struct PrefixCacheOptions {
  int32_t max_blocks = 0;  // blocks kept at most, every tree together (0 = no limit but the engine's memory)
};

// Counters for /metrics and usage.prompt_tokens_details.cached_tokens.
struct PrefixCacheStats {
  int64_t n_lookups = 0;         // cacheable requests that looked for a prefix
  int64_t n_hits = 0;            // of them, requests that reused at least one block
  int64_t n_hit_tokens = 0;      // prompt tokens those requests did not feed
  int64_t n_inserted_blocks = 0;  // blocks stored
  int64_t n_evicted_blocks = 0;  // blocks dropped (least recently used first)
};

class PrefixCache {
 public:
  explicit PrefixCache(Engine& engine, const PrefixCacheOptions& options = {});
  // Removes its donor sequences from the engine.
  ~PrefixCache();
  PrefixCache(const PrefixCache&) = delete;
  PrefixCache& operator=(const PrefixCache&) = delete;

  // Whether `seq` may be cached or served from the cache: its policy shares_prefix() and no tentative step is
  // undecided.
  bool cacheable(kv::SeqId seq) const;

  // For a request about to feed `prompt` to the new, empty sequence `seq`: finds the longest cached prefix of
  // whole blocks that leaves at least the prompt's last token to feed (its logits start the reply) and, on a hit,
  // replaces `seq` by a fork of that prefix's donor cut to it. Returns the prompt tokens the sequence now holds
  // (0 = no hit: `seq` untouched). Fails only when the engine refuses the fork (seq is then gone too).
  Result<int32_t> reuse(kv::SeqId& seq, std::span<const int32_t> prompt);

  // Offers what `seq` holds, `tokens` being the tokens fed to it (only the first n_past are read): its whole
  // blocks are stored, as a fork of `seq` cut to them (adopt = false) or as `seq` itself, cut the same way (adopt
  // = true: the caller is done with it; the cache removes it when it stores nothing new). Needs a free sequence of
  // the engine: an older donor makes way if needed; with none to make way the offer is dropped.
  void insert(kv::SeqId seq, std::span<const int32_t> tokens, bool adopt = false);

  // Drops the least recently used leaf block; false when the cache is empty.
  bool evict_lru_block();
  // Drops least recently used blocks until one donor sequence is gone (a new sequence needs its place); false
  // when the cache holds none.
  bool release_sequence();
  // Releases donors until the engine can take one more sequence (or the cache holds none): called before a
  // request's sequence is added.
  void make_room_for_sequence();
  // Drops least recently used blocks until the engine's KvCache::used_bytes() is at most `max_used_bytes` or the
  // cache is empty (pages a live sequence shares stay in use).
  void trim(int64_t max_used_bytes);
  // Drops everything.
  void clear();

  const PrefixCacheStats& stats() const { return stats_; }
  int32_t n_blocks() const { return n_blocks_; }
  int32_t n_donors() const { return static_cast<int32_t>(donor_refs_.size()); }

 private:
  static constexpr int32_t kNone = -1;
  struct Tree;
  struct Node {
    std::vector<int32_t> tokens;  // [block] the block's tokens
    int32_t parent = kNone;       // node index; kNone for a block at the start of a prompt
    int32_t depth = 0;            // blocks from the start, this one included
    std::vector<int32_t> children;
    kv::SeqId donor = -1;         // a donor holding at least `depth` blocks, all on this node's path
    uint64_t last_used = 0;
    bool live = false;
    Tree* tree = nullptr;  // the tree holding it
  };
  struct Tree {
    std::vector<int32_t> roots;  // nodes of depth 1
    int32_t block = 0;           // tokens per block (the sequences' page size)
  };

  // The tree of sequences stored like `seq` (created when `create`); null when there is none.
  Tree* tree_of(kv::SeqId seq, bool create);
  int32_t block_tokens(kv::SeqId seq) const;
  // The child of `parent` (kNone: a root of `tree`) whose tokens are `block`, or kNone.
  int32_t find_child(const Tree& tree, int32_t parent, std::span<const int32_t> block) const;
  // Walks `tokens` block by block, at most max_blocks; returns the nodes matched, root first.
  std::vector<int32_t> walk(const Tree& tree, std::span<const int32_t> tokens, int32_t max_blocks) const;
  void touch(std::span<const int32_t> path);
  void name_donor(int32_t node, kv::SeqId donor);
  void drop_donor_ref(kv::SeqId donor);
  int32_t new_node();
  void remove_leaf(int32_t node);

  Engine& engine_;
  PrefixCacheOptions options_;
  std::map<std::string, Tree> trees_;     // by storage key (see tree_of)
  std::vector<Node> nodes_;
  std::vector<int32_t> free_nodes_;
  std::map<kv::SeqId, int32_t> donor_refs_;  // donor -> nodes naming it
  int32_t n_blocks_ = 0;
  uint64_t clock_ = 0;
  PrefixCacheStats stats_;
};

}  // namespace longhaul::generate
