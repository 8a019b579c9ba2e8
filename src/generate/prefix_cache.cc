#include "generate/prefix_cache.h"

#include <algorithm>
#include <utility>

namespace longhaul::generate {

PrefixCache::PrefixCache(Engine& engine, const PrefixCacheOptions& options) : engine_(engine), options_(options) {}

PrefixCache::~PrefixCache() { clear(); }

bool PrefixCache::cacheable(kv::SeqId seq) const {
  return engine_.has_sequence(seq) && engine_.policy(seq).shares_prefix() && !engine_.has_tentative(seq);
}

int32_t PrefixCache::block_tokens(kv::SeqId seq) const { return engine_.cache().sequence_options(seq).page_tokens; }

PrefixCache::Tree* PrefixCache::tree_of(kv::SeqId seq, bool create) {
  // Two sequences may share cells only when they store them alike: the same policy and cell storage (quantized
  // cells differ from f16 ones), page size (a block is a page), context size (a fork keeps its parent's) and
  // prefill attention (a sparse prefill writes other values than a dense one).
  const std::string key = engine_.describe_kv(seq) + "|ctx=" + std::to_string(engine_.n_ctx(seq)) +
                          "|page=" + std::to_string(block_tokens(seq)) + "|" +
                          model::describe_prefill_attention(engine_.prefill_attention(seq));
  auto it = trees_.find(key);
  if (it == trees_.end()) {
    if (!create) return nullptr;
    it = trees_.emplace(key, Tree{}).first;
    it->second.block = block_tokens(seq);
  }
  return &it->second;
}

int32_t PrefixCache::find_child(const Tree& tree, int32_t parent, std::span<const int32_t> block) const {
  const std::vector<int32_t>& candidates = parent == kNone ? tree.roots : nodes_[static_cast<size_t>(parent)].children;
  for (int32_t c : candidates)
    if (std::equal(block.begin(), block.end(), nodes_[static_cast<size_t>(c)].tokens.begin(),
                   nodes_[static_cast<size_t>(c)].tokens.end()))
      return c;
  return kNone;
}

std::vector<int32_t> PrefixCache::walk(const Tree& tree, std::span<const int32_t> tokens, int32_t max_blocks) const {
  std::vector<int32_t> path;
  const auto block = static_cast<size_t>(tree.block);
  int32_t at = kNone;
  for (int32_t b = 0; b < max_blocks && (static_cast<size_t>(b) + 1) * block <= tokens.size(); ++b) {
    at = find_child(tree, at, tokens.subspan(static_cast<size_t>(b) * block, block));
    if (at == kNone) break;
    path.push_back(at);
  }
  return path;
}

void PrefixCache::touch(std::span<const int32_t> path) {
  // One time for the whole path: a node is never older than its descendants, so the least recently used leaf is
  // the block to drop first.
  ++clock_;
  for (int32_t n : path) nodes_[static_cast<size_t>(n)].last_used = clock_;
}

void PrefixCache::name_donor(int32_t node, kv::SeqId donor) {
  Node& n = nodes_[static_cast<size_t>(node)];
  const kv::SeqId old = n.donor;
  if (old == donor) return;
  ++donor_refs_[donor];
  n.donor = donor;
  if (old >= 0) drop_donor_ref(old);
}

void PrefixCache::drop_donor_ref(kv::SeqId donor) {
  auto it = donor_refs_.find(donor);
  LH_CHECK(it != donor_refs_.end() && it->second > 0);
  if (--it->second > 0) return;
  donor_refs_.erase(it);
  engine_.remove(donor);
}

int32_t PrefixCache::new_node() {
  int32_t n = 0;
  if (!free_nodes_.empty()) {
    n = free_nodes_.back();
    free_nodes_.pop_back();
  } else {
    n = static_cast<int32_t>(nodes_.size());
    nodes_.emplace_back();
  }
  nodes_[static_cast<size_t>(n)] = Node{};
  nodes_[static_cast<size_t>(n)].live = true;
  ++n_blocks_;
  return n;
}

Result<int32_t> PrefixCache::reuse(kv::SeqId& seq, std::span<const int32_t> prompt) {
  if (!cacheable(seq) || engine_.n_past(seq) != 0) return 0;
  ++stats_.n_lookups;
  const Tree* tree = tree_of(seq, false);
  if (tree == nullptr) return 0;
  // The prompt's last token is always fed: its logits give the first generated token.
  const auto max_blocks = static_cast<int32_t>(prompt.empty() ? 0 : (prompt.size() - 1) / static_cast<size_t>(tree->block));
  const std::vector<int32_t> path = walk(*tree, prompt, max_blocks);
  if (path.empty()) return 0;
  touch(path);
  const int32_t n_keep = static_cast<int32_t>(path.size()) * tree->block;
  engine_.remove(seq);  // its place goes to the fork
  Result<kv::SeqId> forked = engine_.fork(nodes_[static_cast<size_t>(path.back())].donor, n_keep);
  seq = forked.is_ok() ? *forked : -1;
  if (!forked.is_ok()) return forked.status();
  ++stats_.n_hits;
  stats_.n_hit_tokens += n_keep;
  return n_keep;
}

void PrefixCache::insert(kv::SeqId seq, std::span<const int32_t> tokens, bool adopt) {
  auto done = [&] {
    if (adopt && engine_.has_sequence(seq)) engine_.remove(seq);
  };
  if (!cacheable(seq)) return done();
  const int32_t block = block_tokens(seq);
  const int32_t n_full = static_cast<int32_t>(std::min<size_t>(tokens.size(), static_cast<size_t>(engine_.n_past(seq))) /
                                              static_cast<size_t>(block));
  if (n_full == 0) return done();
  Tree* tree = tree_of(seq, true);
  if (const std::vector<int32_t> held = walk(*tree, tokens, n_full); static_cast<int32_t>(held.size()) == n_full) {
    touch(held);
    return done();
  }

  // Something new: a donor holding the whole blocks. Making a place for it may drop blocks, so walk after.
  kv::SeqId donor = seq;
  if (adopt) {
    engine_.truncate(seq, n_full * block);
  } else {
    make_room_for_sequence();
    Result<kv::SeqId> forked = engine_.fork(seq, n_full * block);
    if (!forked.is_ok()) return;  // no place for a donor: the offer is dropped
    donor = *forked;
  }
  std::vector<int32_t> path = walk(*tree, tokens, n_full);
  const int32_t n_old = static_cast<int32_t>(path.size());
  for (int32_t b = n_old; b < n_full; ++b) {
    const int32_t parent = path.empty() ? kNone : path.back();
    const int32_t n = new_node();
    Node& node = nodes_[static_cast<size_t>(n)];
    node.tokens.assign(tokens.begin() + static_cast<int64_t>(b) * block, tokens.begin() + static_cast<int64_t>(b + 1) * block);
    node.parent = parent;
    node.depth = b + 1;
    node.tree = tree;
    (parent == kNone ? tree->roots : nodes_[static_cast<size_t>(parent)].children).push_back(n);
    path.push_back(n);
    ++stats_.n_inserted_blocks;
  }
  // The new donor holds the whole path: the blocks it shares with older donors name it too, so an older donor that
  // only duplicated them is removed.
  for (int32_t n : path) name_donor(n, donor);
  touch(path);
  while (options_.max_blocks > 0 && n_blocks_ > options_.max_blocks && evict_lru_block()) {
  }
}

void PrefixCache::remove_leaf(int32_t node) {
  Node n = std::move(nodes_[static_cast<size_t>(node)]);
  LH_CHECK(n.live && n.children.empty());
  std::vector<int32_t>& siblings = n.parent == kNone ? n.tree->roots : nodes_[static_cast<size_t>(n.parent)].children;
  siblings.erase(std::find(siblings.begin(), siblings.end(), node));
  nodes_[static_cast<size_t>(node)] = Node{};
  free_nodes_.push_back(node);
  --n_blocks_;
  ++stats_.n_evicted_blocks;
  // The donor's other nodes lie on its path above this leaf: cut it back to the deepest of them, or remove it.
  auto it = donor_refs_.find(n.donor);
  LH_CHECK(it != donor_refs_.end());
  if (it->second == 1) return drop_donor_ref(n.donor);
  --it->second;
  int32_t at = n.parent;
  while (at != kNone && nodes_[static_cast<size_t>(at)].donor != n.donor) at = nodes_[static_cast<size_t>(at)].parent;
  LH_CHECK_MSG(at != kNone, "PrefixCache: a donor's nodes left its path");
  engine_.truncate(n.donor, nodes_[static_cast<size_t>(at)].depth * n.tree->block);
}

bool PrefixCache::evict_lru_block() {
  int32_t oldest = kNone;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const Node& n = nodes_[i];
    if (n.live && n.children.empty() && (oldest == kNone || n.last_used < nodes_[static_cast<size_t>(oldest)].last_used))
      oldest = static_cast<int32_t>(i);
  }
  if (oldest == kNone) return false;
  remove_leaf(oldest);
  return true;
}

bool PrefixCache::release_sequence() {
  const size_t before = donor_refs_.size();
  while (donor_refs_.size() >= before && before > 0)
    if (!evict_lru_block()) return false;
  return before > 0;
}

void PrefixCache::make_room_for_sequence() {
  while (engine_.cache().n_sequences() >= engine_.cache().options().max_sequences && release_sequence()) {
  }
}

void PrefixCache::trim(int64_t max_used_bytes) {
  while (engine_.cache().used_bytes() > max_used_bytes && evict_lru_block()) {
  }
}

void PrefixCache::clear() {
  while (evict_lru_block()) {
  }
}

}  // namespace longhaul::generate
