#include "eval/sublayer_calibration.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>

#include "eval/ppl.h"
#include "generate/engine.h"
#include "kernels/ops.h"

namespace longhaul::eval {
namespace {

// log softmax of each row, in place.   rows: [n_rows, n_vocab]
void log_softmax_rows(std::vector<float>& rows, int32_t n_vocab) {
  const size_t n_rows = rows.size() / static_cast<size_t>(n_vocab);
  for (size_t r = 0; r < n_rows; ++r) {
    float* row = rows.data() + r * static_cast<size_t>(n_vocab);
    const float max = *std::max_element(row, row + n_vocab);
    double sum = 0.0;
    for (int32_t i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<double>(row[i] - max));
    const auto log_z = static_cast<float>(static_cast<double>(max) + std::log(sum));
    for (int32_t i = 0; i < n_vocab; ++i) row[i] -= log_z;
  }
}

// The logits [n_tokens, n_vocab] of every token of `tokens` under the model with `skip` left out, on an engine of
// its own (a few pages of KV) over the shared pool.
Result<std::vector<float>> all_logits(const model::Model& model, std::span<const int32_t> tokens,
                                      const model::SublayerSkip& skip, ThreadPool& pool) {
  generate::EngineOptions eo;
  eo.n_ctx = static_cast<int32_t>(tokens.size());
  eo.n_batch = std::min<int32_t>(static_cast<int32_t>(tokens.size()), 512);
  eo.max_sequences = 1;
  eo.skip = skip;
  LH_ASSIGN_OR_RETURN(std::unique_ptr<generate::Engine> engine, generate::Engine::create(model, eo, &pool));
  generate::SequenceOptions so;
  so.kv_policy = "full";
  LH_ASSIGN_OR_RETURN(kv::SeqId seq, engine->add_sequence(so));
  std::vector<float> logits;
  LH_RETURN_IF_ERROR(engine->feed(seq, tokens, nullptr, &logits));
  return logits;
}

}  // namespace

Result<std::vector<int32_t>> sublayer_calibration_tokens(const tokenizer::Tokenizer& tokenizer, int32_t n_tokens) {
  if (n_tokens < 2) return Status::error("sub-layer calibration needs at least 2 tokens, not " + std::to_string(n_tokens));
  LH_ASSIGN_OR_RETURN(const std::string text, default_eval_text());
  const std::vector<int32_t> all = tokenizer.encode(text, false, false);
  const size_t n_prefix = tokenizer.encode("", true, false).size();
  if (n_prefix >= static_cast<size_t>(n_tokens)) return Status::error("sub-layer calibration needs more tokens");
  const auto n_text = static_cast<size_t>(n_tokens) - n_prefix;
  if (all.size() < n_text)
    return Status::error("the calibration text has " + std::to_string(all.size()) + " tokens, fewer than " +
                         std::to_string(n_text));
  // What the tokenizer puts before any text (BOS where the model's file asks for it), then the text's tail.
  std::vector<int32_t> tokens = tokenizer.encode("", true, false);
  tokens.insert(tokens.end(), all.end() - static_cast<std::ptrdiff_t>(n_text), all.end());
  return tokens;
}

Result<std::vector<kv::SublayerRemoval>> calibrate_sublayers(const model::Model& model,
                                                             std::span<const int32_t> tokens,
                                                             const SublayerCalibrationOptions& options,
                                                             const std::function<void(const std::string&)>& progress) {
  const int32_t n_layer = model.config().n_layer, n_vocab = model.config().n_vocab;
  const int32_t n_sublayers = 2 * n_layer;
  const int32_t n_ranked = options.n_ranked > 0 ? options.n_ranked : (n_sublayers + 3) / 4;
  if (n_ranked > n_sublayers)
    return Status::error("cannot rank " + std::to_string(n_ranked) + " sub-layers: the model has " +
                         std::to_string(n_sublayers) + " (" + std::to_string(n_layer) + " layers x attention, FFN)");
  if (tokens.size() < 2) return Status::error("sub-layer calibration needs at least 2 tokens");
  ThreadPool pool(options.n_threads > 0 ? options.n_threads : default_thread_count());

  // The whole model's next-token log-probabilities and top tokens.   whole: [n_tokens, n_vocab]
  LH_ASSIGN_OR_RETURN(std::vector<float> whole, all_logits(model, tokens, model::SublayerSkip(), pool));
  log_softmax_rows(whole, n_vocab);
  const auto n_rows = static_cast<int32_t>(tokens.size());
  std::vector<int32_t> whole_top(static_cast<size_t>(n_rows));
  for (int32_t r = 0; r < n_rows; ++r)
    whole_top[static_cast<size_t>(r)] =
        static_cast<int32_t>(kernels::argmax(whole.data() + int64_t{r} * n_vocab, n_vocab));
  std::vector<float> whole_p(whole.size());  // [n_tokens, n_vocab] its probabilities, computed once
  for (size_t i = 0; i < whole.size(); ++i) whole_p[i] = std::exp(whole[i]);

  std::vector<kv::SublayerRemoval> order;
  model::SublayerSkip removed(n_layer);
  const int64_t n_passes = int64_t{n_ranked} * n_sublayers - int64_t{n_ranked} * (n_ranked - 1) / 2;
  int64_t i_pass = 0;
  for (int32_t rank = 0; rank < n_ranked; ++rank) {
    kv::SublayerRemoval best;
    bool chosen = false;
    double best_kl = std::numeric_limits<double>::infinity();
    for (int32_t i = 0; i < n_sublayers; ++i) {
      const kv::Sublayer candidate{i / 2, static_cast<kv::SublayerKind>(i % 2)};
      if (removed.skips(candidate.layer, candidate.kind)) continue;
      if (progress)
        progress("calibrating sub-layers: rank " + std::to_string(rank + 1) + "/" + std::to_string(n_ranked) +
                 ", trying " + kv::sublayer_name(candidate) + " (pass " + std::to_string(++i_pass) + "/" +
                 std::to_string(n_passes) + ")");
      model::SublayerSkip trial = removed;
      trial.skip(candidate);
      LH_ASSIGN_OR_RETURN(std::vector<float> pruned, all_logits(model, tokens, trial, pool));
      log_softmax_rows(pruned, n_vocab);
      // KL(whole || pruned) = sum_v p(v) (log p(v) - log q(v)), averaged over the tokens.
      double kl = 0.0;
      int32_t n_agree = 0;
      for (int32_t r = 0; r < n_rows; ++r) {
        const float* log_p = whole.data() + int64_t{r} * n_vocab;
        const float* p = whole_p.data() + int64_t{r} * n_vocab;
        const float* log_q = pruned.data() + int64_t{r} * n_vocab;
        double row = 0.0;
        for (int32_t v = 0; v < n_vocab; ++v) row += static_cast<double>(p[v]) * static_cast<double>(log_p[v] - log_q[v]);
        kl += std::max(0.0, row);  // rounding can leave a tiny negative sum for equal rows
        n_agree += kernels::argmax(log_q, n_vocab) == whole_top[static_cast<size_t>(r)];
      }
      kl /= n_rows;
      if (!chosen || kl < best_kl) {  // strict: a tie keeps the earlier sub-layer
        chosen = true;
        best_kl = kl;
        best.sublayer = candidate;
        best.kl = static_cast<float>(std::min(kl, 1e6));
        best.agreement = static_cast<float>(n_agree) / static_cast<float>(n_rows);
      }
    }
    removed.skip(best.sublayer);
    order.push_back(best);
  }
  return order;
}

Status calibrate_sublayer_order(const model::Model& model, const tokenizer::Tokenizer& tokenizer,
                                const SublayerCalibrationOptions& options,
                                const std::function<void(const std::string&)>& progress, kv::HeadProfile& profile) {
  LH_ASSIGN_OR_RETURN(const std::vector<int32_t> tokens, sublayer_calibration_tokens(tokenizer, options.n_tokens));
  LH_ASSIGN_OR_RETURN(profile.sublayer_order, calibrate_sublayers(model, tokens, options, progress));
  profile.sublayer_tokens = static_cast<int32_t>(tokens.size());
  if (profile.model.empty()) {
    const std::string& path = model.file().path();
    profile.model = path.substr(path.find_last_of('/') + 1);
  }
  if (profile.n_layer == 0) {
    profile.n_layer = model.kv_shape().n_layer;
    profile.n_head_kv = model.kv_shape().n_head_kv;
  }
  return Status::ok();
}

}  // namespace longhaul::eval
