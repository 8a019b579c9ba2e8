#include "generate/session.h"

#include <algorithm>
#include <cstring>

namespace longhaul::generate {

Result<std::unique_ptr<Session>> Session::create(const model::Model& model, const SessionOptions& options) {
  const int32_t n_ctx = options.n_ctx > 0 ? options.n_ctx : model.config().n_ctx_train;
  if (n_ctx < 1 || n_ctx > (1 << 24)) return Status::error("context size " + std::to_string(n_ctx) + " is outside [1, 16777216]");
  if (options.n_batch < 1) return Status::error("batch size " + std::to_string(options.n_batch) + " must be >= 1");
  if (options.n_threads < 0 || options.n_threads > 1024)
    return Status::error("thread count " + std::to_string(options.n_threads) + " is outside [0, 1024]");
  kv::KvCacheOptions kv_options;
  kv_options.max_cells = n_ctx;
  kv_options.max_sequences = 1;
  kv::KvCache cache(model.kv_shape(), kv_options);
  LH_ASSIGN_OR_RETURN(kv::SeqId seq, cache.add_sequence());
  const int n_threads = options.n_threads > 0 ? options.n_threads : default_thread_count();
  return std::unique_ptr<Session>(new Session(model, options, std::move(cache), seq, n_ctx, n_threads));
}

Session::Session(const model::Model& model, const SessionOptions& options, kv::KvCache cache, kv::SeqId seq,
                 int32_t n_ctx, int n_threads)
    : model_(model), options_(options), cache_(std::move(cache)), seq_(seq), n_ctx_(n_ctx), pool_(n_threads) {}

void Session::reset() { cache_.clear_sequence(seq_); }

Status Session::feed(std::span<const int32_t> tokens, const ProgressFn& progress) {
  return run(tokens, false, nullptr, progress);
}

Status Session::feed_all_logits(std::span<const int32_t> tokens, std::vector<float>& out) {
  return run(tokens, true, &out, nullptr);
}

Status Session::run(std::span<const int32_t> tokens, bool all_logits, std::vector<float>* out,
                    const ProgressFn& progress) {
  if (tokens.empty()) return Status::error("nothing to feed: empty token list");
  const int64_t n_total = static_cast<int64_t>(tokens.size());
  if (n_past() + n_total > n_ctx_)
    return Status::error("context full: " + std::to_string(n_past()) + " cached + " + std::to_string(n_total) +
                         " new tokens exceed the context size of " + std::to_string(n_ctx_) + " (raise -c/--ctx-size)");
  const int32_t n_vocab = model_.config().n_vocab;
  if (out != nullptr) out->resize(static_cast<size_t>(n_total * n_vocab));
  for (int64_t begin = 0; begin < n_total; begin += options_.n_batch) {
    const int64_t end = std::min(n_total, begin + options_.n_batch);
    batch_.clear();
    int32_t pos = n_past();
    for (int64_t i = begin; i < end; ++i) batch_.add(tokens[static_cast<size_t>(i)], pos++, seq_, all_logits || i == n_total - 1);
    LH_RETURN_IF_ERROR(model_.forward(batch_, cache_, state_, pool_, step_logits_));
    if (out != nullptr)
      std::memcpy(out->data() + begin * n_vocab, step_logits_.data(), step_logits_.size() * sizeof(float));
    if (end == n_total) {
      const float* last = step_logits_.data() + step_logits_.size() - static_cast<size_t>(n_vocab);
      logits_.assign(last, last + n_vocab);
    }
    if (progress) progress(end, n_total);
  }
  return Status::ok();
}

}  // namespace longhaul::generate
