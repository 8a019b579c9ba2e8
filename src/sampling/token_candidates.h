// TokenCandidates: the working set a sampler chain narrows down to one token.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace longhaul::sampling {

// One candidate token. The three fields travel together because every stage that reorders
// candidates (top-k, top-p, min-p) must move id, logit and probability as one unit; an
// array of structs makes that a single swap instead of a permutation applied to three arrays.
struct TokenData {
  int32_t id = 0;      // token id in [0, n_vocab)
  float logit = 0.0f;  // unnormalised log-probability, possibly already penalised or scaled
  float prob = 0.0f;   // softmax of `logit` over the candidates; valid only after softmax()
};

// The candidate set handed from stage to stage.
//
// Invariants every stage keeps:
//   - `data` is never empty after fill() (a stage may shrink it, but keeps at least one token);
//   - the first `n_sorted` entries are the n_sorted best candidates in descending order of
//     `better()` (logit, ties broken by the lower id); n_sorted == data.size() means fully sorted;
//   - `selected` is -1 until a picking stage (greedy, dist) sets it to an index into `data`.
//
// The buffer is reused across steps: fill() resizes `data` back to n_vocab, which does not
// allocate once the vector has grown to that size, so sampling a token allocates nothing.
struct TokenCandidates {
  std::vector<TokenData> data;  // [n_candidates], n_candidates <= n_vocab
  size_t n_sorted = 0;          // length of the sorted prefix of `data`
  int64_t selected = -1;        // index into `data` of the chosen token, -1 = none yet
  std::vector<TokenData> scratch;  // [k] working space of sort_top(), kept to avoid reallocating

  // Loads one logits row. NaN logits become -inf so that sorting stays a strict weak order.
  void fill(const float* logits, int32_t n_vocab);  // logits: [n_vocab]

  size_t size() const { return data.size(); }
  bool sorted() const { return n_sorted == data.size(); }

  // The total order every stage uses: a higher logit first, equal logits by the lower id, so
  // results never depend on the standard library's sort algorithm.
  static bool better(const TokenData& a, const TokenData& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  }

  // Makes the first min(k, size) entries the k best in descending order (grows n_sorted).
  // Costs O(size) plus O(k log k); an already sorted prefix is not sorted again. The order of
  // the entries after the prefix is unspecified.
  void sort_top(size_t k);

  // Keeps the first n entries (n >= 1) and clamps n_sorted accordingly.
  void truncate(size_t n);

  // Index of the best candidate by better() (the highest logit, ties -> lowest id).
  size_t argmax() const;

  // Fills `prob` with the softmax of `logit` over the current candidates.
  // If every logit is -inf the distribution is taken as uniform rather than NaN.
  void softmax();

 private:
  // Moves the k best entries (unordered) to the front using `scratch`; needs n_sorted == 0.
  void partition_best(size_t k);
};

}  // namespace longhaul::sampling
