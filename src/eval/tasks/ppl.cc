// ppl: streams a long text through the policy and reports perplexity per position
// bucket, as StreamingLLM's Figure 3 does. One pass to the largest length; each length
// L reports the tokens in (previous length, L].
//
// Chunking. The text is fed spec.chunk tokens per step with every token's logits
// kept. For `full` this is exact. For an evicting policy the cache is made room for
// the chunk before the step, so the chunk's i-th token sees the policy's cache minus
// (chunk - 1 - i) of its oldest recent tokens: with chunk 1 every token sees exactly
// the policy's cache, as in the paper; with chunk 64 and window 1020 a token sees
// between 957 and 1020 recent tokens.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>

#include "base/mapped_file.h"
#include "base/sys_info.h"
#include "eval/ppl.h"
#include "eval/task.h"

namespace longhaul::eval {

double token_nll(std::span<const float> logits, int32_t target) {
  LH_CHECK(target >= 0 && static_cast<size_t>(target) < logits.size());
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float l : logits) sum += std::exp(static_cast<double>(l) - max);
  return std::log(sum) - (static_cast<double>(logits[static_cast<size_t>(target)]) - max);
}

BucketedNll::BucketedNll(std::vector<int32_t> bucket_ends)
    : ends_(std::move(bucket_ends)), sum_(ends_.size(), 0.0), count_(ends_.size(), 0) {
  LH_CHECK_MSG(std::is_sorted(ends_.begin(), ends_.end()), "bucket ends must ascend");
}

size_t BucketedNll::bucket_of(int32_t j) const {
  return static_cast<size_t>(std::upper_bound(ends_.begin(), ends_.end(), j) - ends_.begin());
}

bool BucketedNll::add(int32_t j, double nll) {
  const size_t b = bucket_of(j);
  if (b >= ends_.size()) return false;
  sum_[b] += nll;
  ++count_[b];
  return j == ends_[b] - 1;
}

double BucketedNll::ppl(size_t b) const {
  if (count_[b] == 0) return std::numeric_limits<double>::quiet_NaN();
  return std::exp(sum_[b] / static_cast<double>(count_[b]));
}

Result<std::string> default_eval_text() {
  const std::filesystem::path dir = "/usr/share/common-licenses";
  std::error_code ec;
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec))
    if (entry.is_regular_file() && !entry.is_symlink()) files.push_back(entry.path());
  if (ec || files.empty())
    return Status::error("no default text: " + dir.string() + " is missing or empty; give one with --text FILE");
  std::sort(files.begin(), files.end());
  std::string text;
  for (const auto& f : files) {
    LH_ASSIGN_OR_RETURN(std::string part, read_text_file(f.string()));
    text += part;
    text += "\n\n";
  }
  return text;
}

namespace {

class PplTask final : public Task {
 public:
  std::string name() const override { return "ppl"; }

  // A bucket ending at length L scores the tokens before L that have a predecessor, so L = 1 scores none; and
  // the text must hold the longest length.
  Status check(const tokenizer::Tokenizer& tokenizer, const EvalSpec& spec) override {
    for (int32_t length : spec.lengths)
      if (length < 2)
        return Status::error("ppl: length " + std::to_string(length) +
                             " holds no scored token (the first token has no prediction); give lengths of at least 2");
    tokenize_text(tokenizer, spec.text);
    const int32_t longest = *std::max_element(spec.lengths.begin(), spec.lengths.end());
    if (static_cast<int64_t>(tokens_.size()) < longest)
      return Status::error("ppl: the text has " + std::to_string(tokens_.size()) + " tokens, fewer than the length " +
                           std::to_string(longest) + "; give a longer one with --text FILE or shorter --lengths");
    return Status::ok();
  }

  Status run(const TaskContext& ctx) override {
    const EvalSpec& spec = ctx.spec;
    std::vector<int32_t> ends = spec.lengths;
    std::sort(ends.begin(), ends.end());
    ends.erase(std::unique(ends.begin(), ends.end()), ends.end());
    const int32_t n_total = ends.back();
    tokenize_text(ctx.tokenizer, spec.text);
    if (static_cast<int32_t>(tokens_.size()) < n_total)
      return Status::error("ppl: the text has " + std::to_string(tokens_.size()) + " tokens, fewer than the length " +
                           std::to_string(n_total) + "; give a longer one with --text FILE");
    generate::SessionOptions so = ctx.session;
    so.n_ctx = std::max(so.n_ctx, n_total);
    so.n_batch = std::max(1, spec.chunk);
    LH_ASSIGN_OR_RETURN(std::unique_ptr<generate::Session> session, generate::Session::create(ctx.model, so));
    const std::string policy = session->describe_kv();
    const int32_t n_vocab = ctx.model.config().n_vocab;

    BucketedNll nll(ends);
    std::vector<float> logits;  // [chunk, n_vocab]
    double bucket_start = now_seconds();
    int32_t bucket_first = 0;
    for (int32_t pos = 0; pos < n_total;) {
      const int32_t n = std::min(so.n_batch, n_total - pos);
      LH_RETURN_IF_ERROR(session->feed_all_logits(std::span<const int32_t>(tokens_).subspan(static_cast<size_t>(pos),
                                                                                         static_cast<size_t>(n)),
                                                  logits));
      for (int32_t i = 0; i < n; ++i) {
        const int32_t j = pos + i + 1;  // the token these logits predict
        if (j >= n_total) break;
        const std::span<const float> row(logits.data() + static_cast<size_t>(i) * n_vocab, static_cast<size_t>(n_vocab));
        const double v = token_nll(row, tokens_[static_cast<size_t>(j)]);
        if (!std::isfinite(v)) return Status::error("ppl: non-finite NLL at token " + std::to_string(j));
        if (nll.add(j, v)) {
          const size_t b = nll.bucket_of(j);
          const double seconds = now_seconds() - bucket_start;
          EvalRow row;
          row.policy = policy;
          row.length = ends[b];
          row.ppl = nll.ppl(b);
          row.kv_bytes = session->cache().used_bytes();
          row.peak_rss_bytes = peak_rss_bytes();
          const double tps = seconds > 0 ? (j + 1 - bucket_first) / seconds : 0.0;
          if (so.n_batch > 1) {
            row.prefill_tps = tps;
          } else {
            row.decode_tps = tps;
          }
          if (ctx.emit) ctx.emit(row);
          bucket_start = now_seconds();
          bucket_first = j + 1;
        }
      }
      pos += n;
      if (ctx.progress) {
        char line[200];
        std::snprintf(line, sizeof line, "ppl %s: %d/%d tokens, KV %.1f MiB", policy.c_str(), pos, n_total,
                      static_cast<double>(session->cache().used_bytes()) / (1 << 20));
        ctx.progress(line);
      }
    }
    return Status::ok();
  }

 private:
  void tokenize_text(const tokenizer::Tokenizer& tokenizer, const std::string& text) {
    if (!tokens_.empty() && text_ == text) return;
    text_ = text;
    tokens_ = tokenizer.encode(text, true, false);
  }

  std::string text_;
  std::vector<int32_t> tokens_;  // tokens of text_, cached across policies
};

}  // namespace

std::unique_ptr<Task> make_ppl_task() { return std::make_unique<PplTask>(); }

}  // namespace longhaul::eval
