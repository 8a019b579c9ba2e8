// Retrieval drafts: REST (He et al., 2024, "REST: Retrieval-Based Speculative Decoding") and RASD (Quan et al.,
// 2025, "RASD: Retrieval-Augmented Speculative Decoding"). A datastore of text is searched for the longest suffix
// of the request's text; the tokens that followed its occurrences, merged into a trie, are the draft tree.
//
// Datastore: the request's own text (its prompt, in chat the whole conversation, and the reply so far), searched
// afresh at each propose() since it grows every step, and optionally a corpus file (--spec-corpus), tokenized once
// and indexed by a suffix array, so that the occurrences of a pattern are one contiguous range found by binary
// search (REST's index). The match is the longest tail of the text (up to kMaxMatch tokens) that occurs earlier in
// the text or anywhere in the corpus; every occurrence of that length contributes its continuation (up to
// kMaxOccurrences from each store: the latest in the text, the first of the suffix array's range).
//
// Tree: the continuations are inserted into a trie whose node counts say how many occurrences pass through it;
// count / occurrences estimates the draft probability of a node, and nodes below kMinShare are pruned (REST keeps
// the most frequent prefixes the same way). RASD then fuses the retrieval tree with a second draft tree by longest
// prefix matching: the second tree's path is walked down the trie, shared prefixes merge, and the rest hangs
// below the deepest shared node. Here the second tree is prompt lookup's chain (ngram.h: the latest occurrence of
// the longest 4..1-token tail), whose recency makes it the likelier guess when its tail is as long as the
// retrieval's match, so its nodes are then kept first; a longer retrieval match predicts better, and then the chain
// ranks by count like the rest. The rest follows by count (ties: shallower first), at most max_tokens nodes.
// Parents always come before their children: a child's count never exceeds its parent's, and prompt lookup's
// nodes form one path from the root. The draft's evidence class (draft_source.h) is that of the longer of the two
// matches.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "generate/speculative/draft_source.h"
#include "generate/speculative/ngram.h"
#include "tokenizer/tokenizer.h"

namespace longhaul::generate::speculative {

class RetrievalSource final : public DraftSource {
 public:
  static constexpr int32_t kMaxMatch = 16;         // longest text tail looked up
  static constexpr int32_t kMaxOccurrences = 64;   // continuations read from each store per draft
  static constexpr int32_t kMaxDepth = 32;         // longest continuation read
  static constexpr double kMinShare = 1.0 / 16.0;  // a node that fewer occurrences reach is pruned
  static constexpr int64_t kMaxCorpusBytes = int64_t{256} << 20;

  // corpus: tokens of the corpus file (may be empty: the request's text alone), indexed here.
  explicit RetrievalSource(std::vector<int32_t> corpus = {});

  std::string name() const override { return "retrieval"; }
  void propose(const DraftContext& context, int32_t max_tokens, Draft& draft) override;

  const std::vector<int32_t>& corpus() const { return corpus_; }
  const std::vector<int32_t>& suffix_array() const { return suffix_array_; }

 private:
  struct TrieNode {
    int32_t token = -1;
    int32_t parent = -1;  // node id, -1 for the root
    int32_t depth = 0;
    int32_t count = 0;    // occurrences whose continuation passes through the node
    bool from_ngram = false;
    std::vector<int32_t> children;
  };
  // Adds a continuation below the root (longest-prefix matching: existing nodes are shared); `weight` is added to
  // the count of every node on its path.
  void insert(std::span<const int32_t> continuation, int32_t weight, bool from_ngram);

  std::vector<int32_t> corpus_;
  std::vector<int32_t> suffix_array_;  // [corpus size] start of each suffix, in sorted order
  NgramSource ngram_;
  std::vector<TrieNode> trie_;  // scratch of propose(); node 0 is the root (the text's last token)
};

// The suffix array of `text`: the start positions of its suffixes in lexicographic order of their tokens (a suffix
// that is a prefix of another sorts first). Prefix doubling, O(n log^2 n).
std::vector<int32_t> build_suffix_array(std::span<const int32_t> text);

// The range [first, last) of `suffix_array` (of `text`) whose suffixes start with `pattern`; empty: first == last.
std::pair<int64_t, int64_t> find_suffix_range(std::span<const int32_t> text, std::span<const int32_t> suffix_array,
                                              std::span<const int32_t> pattern);

// The tokens of the corpus file at `path` (--spec-corpus): fails, naming the file, when it cannot be read, is a
// directory, is empty or larger than kMaxCorpusBytes, holds a NUL byte (not text) or tokenizes to nothing.
Result<std::vector<int32_t>> read_corpus(const std::string& path, const tokenizer::Tokenizer& tokenizer);

}  // namespace longhaul::generate::speculative
