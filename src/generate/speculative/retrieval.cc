#include "generate/speculative/retrieval.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <numeric>

#include "base/mapped_file.h"

namespace longhaul::generate::speculative {

std::vector<int32_t> build_suffix_array(std::span<const int32_t> text) {
  const auto n = static_cast<int32_t>(text.size());
  std::vector<int32_t> sa(static_cast<size_t>(n));
  std::iota(sa.begin(), sa.end(), 0);
  if (n == 0) return sa;
  // rank[i]: order of suffix i by its first k tokens; doubling k sorts by (rank[i], rank[i + k]), where a suffix
  // that ends before i + k ranks -1 there (shorter first).
  std::vector<int32_t> rank(text.begin(), text.end()), next(static_cast<size_t>(n));
  for (int32_t k = 1;; k *= 2) {
    auto key = [&](int32_t i) {
      return std::pair<int32_t, int32_t>(rank[static_cast<size_t>(i)],
                                         i + k < n ? rank[static_cast<size_t>(i + k)] : -1);
    };
    std::sort(sa.begin(), sa.end(), [&](int32_t a, int32_t b) { return key(a) < key(b); });
    next[static_cast<size_t>(sa[0])] = 0;
    for (int32_t r = 1; r < n; ++r)
      next[static_cast<size_t>(sa[static_cast<size_t>(r)])] =
          next[static_cast<size_t>(sa[static_cast<size_t>(r - 1)])] +
          (key(sa[static_cast<size_t>(r - 1)]) < key(sa[static_cast<size_t>(r)]) ? 1 : 0);
    rank.swap(next);
    if (rank[static_cast<size_t>(sa.back())] == n - 1 || k >= n) break;  // every rank distinct: sorted
  }
  return sa;
}

std::pair<int64_t, int64_t> find_suffix_range(std::span<const int32_t> text, std::span<const int32_t> suffix_array,
                                              std::span<const int32_t> pattern) {
  // Compares the suffix at `start`, cut to the pattern's length, with the pattern: <0, 0 (starts with it), >0.
  auto compare = [&](int32_t start) {
    const size_t s = static_cast<size_t>(start);
    for (size_t k = 0; k < pattern.size(); ++k) {
      if (s + k >= text.size()) return -1;  // the suffix ends first: it sorts before
      if (text[s + k] != pattern[k]) return text[s + k] < pattern[k] ? -1 : 1;
    }
    return 0;
  };
  const auto first = std::partition_point(suffix_array.begin(), suffix_array.end(),
                                          [&](int32_t start) { return compare(start) < 0; });
  const auto last = std::partition_point(first, suffix_array.end(), [&](int32_t start) { return compare(start) == 0; });
  return {first - suffix_array.begin(), last - suffix_array.begin()};
}

Result<std::vector<int32_t>> read_corpus(const std::string& path, const tokenizer::Tokenizer& tokenizer) {
  const std::string what = "--spec-corpus '" + path + "'";
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return Status::error(what + ": cannot read: " + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) return Status::error(what + " is a directory; give a text file");
  if (st.st_size == 0) return Status::error(what + " is empty; give a text file to draft from");
  if (st.st_size > RetrievalSource::kMaxCorpusBytes)
    return Status::error(what + " has " + std::to_string(st.st_size) + " bytes; at most " +
                         std::to_string(RetrievalSource::kMaxCorpusBytes) + " are read");
  Result<std::string> text = read_text_file(path);
  if (!text) return Status::error(what + ": " + text.message());
  if (const size_t nul = text->find('\0'); nul != std::string::npos)
    return Status::error(what + " is not text (a NUL byte at offset " + std::to_string(nul) + ")");
  std::vector<int32_t> tokens = tokenizer.encode(*text, false, false);
  if (tokens.empty()) return Status::error(what + " tokenizes to no tokens");
  return tokens;
}

RetrievalSource::RetrievalSource(std::vector<int32_t> corpus)
    : corpus_(std::move(corpus)), suffix_array_(build_suffix_array(corpus_)) {}

void RetrievalSource::insert(std::span<const int32_t> continuation, int32_t weight, bool from_ngram) {
  int32_t node = 0;
  for (const int32_t token : continuation) {
    int32_t child = -1;
    for (int32_t c : trie_[static_cast<size_t>(node)].children)
      if (trie_[static_cast<size_t>(c)].token == token) child = c;
    if (child < 0) {
      TrieNode added;
      added.token = token;
      added.parent = node;
      added.depth = trie_[static_cast<size_t>(node)].depth + 1;
      trie_.push_back(std::move(added));
      child = static_cast<int32_t>(trie_.size()) - 1;
      trie_[static_cast<size_t>(node)].children.push_back(child);
    }
    TrieNode& c = trie_[static_cast<size_t>(child)];
    c.count += weight;
    c.from_ngram = c.from_ngram || from_ngram;
    node = child;
  }
}

void RetrievalSource::propose(const DraftContext& context, int32_t max_tokens, Draft& draft) {
  const std::span<const int32_t> text = context.tokens;
  const auto size = static_cast<int64_t>(text.size());
  if (size == 0 || max_tokens < 1) return;
  const int64_t depth = std::min<int64_t>(max_tokens, kMaxDepth);

  // The text: for each earlier position e followed by at least one token, how many tokens (up to kMaxMatch) of
  // the text's tail end there.
  std::vector<std::pair<int64_t, int32_t>> text_matches;  // (end, match length), latest first
  int32_t text_length = 0;
  for (int64_t e = size - 2; e >= 0; --e) {
    int32_t m = 0;
    while (m < kMaxMatch && m <= e && text[static_cast<size_t>(e - m)] == text[static_cast<size_t>(size - 1 - m)]) ++m;
    if (m == 0) continue;
    text_matches.emplace_back(e, m);
    text_length = std::max(text_length, m);
  }
  // The corpus: the longest tail (not shorter than the text's match) with an occurrence.
  int32_t corpus_length = 0;
  std::pair<int64_t, int64_t> range{0, 0};
  for (int32_t m = static_cast<int32_t>(std::min<int64_t>(kMaxMatch, size)); m >= std::max(1, text_length) && !corpus_.empty();
       --m) {
    range = find_suffix_range(corpus_, suffix_array_, text.last(static_cast<size_t>(m)));
    if (range.first < range.second) {
      corpus_length = m;
      break;
    }
  }
  const int32_t length = std::max(text_length, corpus_length);

  trie_.assign(1, TrieNode{});
  int32_t n_occurrences = 0;
  if (length > 0) {
    int32_t n_text = 0;
    for (const auto& [end, m] : text_matches) {
      if (m < length) continue;
      if (n_text == kMaxOccurrences) break;
      ++n_text;
      const int64_t from = end + 1;
      insert(text.subspan(static_cast<size_t>(from), static_cast<size_t>(std::min(depth, size - from))), 1, false);
    }
    int32_t n_corpus = 0;
    if (corpus_length == length) {
      for (int64_t r = range.first; r < range.second && n_corpus < kMaxOccurrences; ++r, ++n_corpus) {
        const int64_t from = int64_t{suffix_array_[static_cast<size_t>(r)]} + length;
        const auto n_corpus_tokens = static_cast<int64_t>(corpus_.size());
        if (from >= n_corpus_tokens) continue;  // the occurrence ends the corpus: nothing follows it
        insert(std::span<const int32_t>(corpus_).subspan(static_cast<size_t>(from),
                                                         static_cast<size_t>(std::min(depth, n_corpus_tokens - from))),
               1, false);
      }
    }
    n_occurrences = n_text + n_corpus;
  }
  // RASD's fusion: prompt lookup's chain merged in by longest-prefix matching. Its recency makes it the likelier
  // guess where it matched as long a tail as the retrieval did; where the retrieval matched a longer one (a corpus
  // passage that holds the text's last sentence, against prompt lookup's last word), the retrieval's is likelier.
  std::vector<int32_t> chain;
  int32_t chain_matched = 0;
  const int32_t chain_length = ngram_.lookup(text, static_cast<int32_t>(depth), chain, &chain_matched);
  insert(chain, 0, true);
  if (trie_.size() == 1) return;
  const bool chain_first = chain_length >= length;
  // The evidence class: the longest tail some drafted continuation follows (prompt lookup's counts past kMaxMatch).
  draft.evidence = match_length_class(std::max(length, chain_matched));

  // Pruning and order: prompt lookup's nodes (when chain_first), then by count, shallower first, then as inserted.
  std::vector<int32_t> order;
  for (int32_t i = 1; i < static_cast<int32_t>(trie_.size()); ++i) {
    const TrieNode& t = trie_[static_cast<size_t>(i)];
    if (t.from_ngram || (n_occurrences > 0 && t.count >= kMinShare * n_occurrences)) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    const TrieNode& x = trie_[static_cast<size_t>(a)];
    const TrieNode& y = trie_[static_cast<size_t>(b)];
    if (chain_first && x.from_ngram != y.from_ngram) return x.from_ngram;
    if (x.count != y.count) return x.count > y.count;
    return x.depth < y.depth;
  });
  if (static_cast<int32_t>(order.size()) > max_tokens) order.resize(static_cast<size_t>(max_tokens));
  std::vector<int32_t> index(trie_.size(), -1);  // node -> draft index
  for (const int32_t node : order) {
    const TrieNode& t = trie_[static_cast<size_t>(node)];
    const int32_t parent = t.parent == 0 ? kDraftRoot : index[static_cast<size_t>(t.parent)];
    LH_CHECK(t.parent == 0 || parent >= 0);
    index[static_cast<size_t>(node)] = static_cast<int32_t>(draft.tokens.size());
    draft.tokens.push_back(t.token);
    draft.parents.push_back(parent);
  }
}

}  // namespace longhaul::generate::speculative
