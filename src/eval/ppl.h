// Perplexity of a long text streamed through a KV policy, reported per position bucket.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"

namespace longhaul::eval {

// -log softmax(logits)[target], computed in double with the max subtracted.
//   logits: [n_vocab]
double token_nll(std::span<const float> logits, int32_t target);

// Accumulates NLL into buckets ending at `bucket_ends` (ascending): the token at
// index j (predicted from j-1) belongs to the first bucket with j < end.
class BucketedNll {
 public:
  explicit BucketedNll(std::vector<int32_t> bucket_ends);
  // Adds the NLL of the token at index j >= 1; returns true when j completes its bucket.
  bool add(int32_t j, double nll);
  // Perplexity exp(mean NLL) of bucket b; NaN when it holds no tokens.
  double ppl(size_t b) const;
  size_t bucket_of(int32_t j) const;
  size_t n_buckets() const { return ends_.size(); }

 private:
  std::vector<int32_t> ends_;
  std::vector<double> sum_;
  std::vector<int64_t> count_;
};

// The default long text for ppl: every regular file of /usr/share/common-licenses
// (base-files; the licences themselves permit verbatim copies), in name order.
// About 60K SmolLM2 tokens of English prose.
Result<std::string> default_eval_text();

}  // namespace longhaul::eval
