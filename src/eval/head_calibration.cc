#include "eval/head_calibration.h"

#include <algorithm>
#include <mutex>
#include <random>
#include <vector>

#include "eval/passkey.h"
#include "generate/session.h"

namespace longhaul::eval {
namespace {

// What the scorer measures for the queries of one prompt: queries at positions >= first_query put mass on the
// cells [target_begin, target_end) (needle), or on the cells `period` and `period - 1` before them (induction,
// echo: a query at position q in the second copy of R sees its token's previous occurrence at q - period).
struct ScoringTarget {
  enum class Kind { kNeedle, kRepeat } kind = Kind::kNeedle;
  int32_t first_query = 0;
  int32_t target_begin = 0, target_end = 0;  // kNeedle
  int32_t period = 0;                         // kRepeat
};

// A full-attention policy that observes every query's attention probabilities and adds up, per (layer, KV head),
// the mass on the current target. Keeps every cell, so cell index == position.
class HeadScorer final : public kv::KvPolicy {
 public:
  explicit HeadScorer(const kv::KvPolicyContext& context)
      : kv::KvPolicy(context),
        n_head_kv_(context.shape.n_head_kv),
        layers_(static_cast<size_t>(context.shape.n_layer)) {
    for (Layer& l : layers_) l.sums.assign(static_cast<size_t>(n_head_kv_) * 3 * 2, 0.0);
  }

  std::string name() const override { return "head-scorer"; }
  std::string describe() const override { return "head-scorer"; }
  int32_t max_cells() const override { return 0; }
  bool needs_scores() const override { return true; }
  bool wants_scores(int32_t query_position) const override { return query_position >= target_.first_query; }
  kv::EvictionPlan plan_eviction(const kv::KvCache&, kv::SeqId, const kv::StepInfo&) const override { return {}; }

  void set_target(const ScoringTarget& target) { target_ = target; }

  void observe_scores(kv::SeqId, int32_t il, int32_t kv_head, int32_t query_position,
                      std::span<const float> probs) override {
    if (query_position < target_.first_query) return;
    const auto n = static_cast<int32_t>(probs.size());
    double mass[3] = {0, 0, 0};  // needle, induction, echo
    bool has[3] = {false, false, false};
    if (target_.kind == ScoringTarget::Kind::kNeedle) {
      for (int32_t c = target_.target_begin; c < std::min(target_.target_end, n); ++c) mass[0] += probs[static_cast<size_t>(c)];
      has[0] = true;
    } else {
      const int32_t echo = query_position - target_.period;
      if (echo >= 1 && echo + 1 < n) {  // the induction target must be a cell of the first copy or earlier
        mass[1] = probs[static_cast<size_t>(echo + 1)];
        mass[2] = probs[static_cast<size_t>(echo)];
        has[1] = has[2] = true;
      }
    }
    Layer& layer = layers_[static_cast<size_t>(il)];
    std::lock_guard<std::mutex> lock(layer.mutex);
    for (int k = 0; k < 3; ++k)
      if (has[k]) {
        const size_t i = (static_cast<size_t>(kv_head) * 3 + static_cast<size_t>(k)) * 2;
        layer.sums[i] += mass[k];
        layer.sums[i + 1] += 1;
      }
  }

  kv::HeadProfile profile(const std::string& model_name) const {
    kv::HeadProfile p;
    p.model = model_name;
    p.n_layer = static_cast<int32_t>(layers_.size());
    p.n_head_kv = n_head_kv_;
    for (const Layer& layer : layers_)
      for (int32_t h = 0; h < n_head_kv_; ++h) {
        float mean[3];
        for (int k = 0; k < 3; ++k) {
          const size_t i = (static_cast<size_t>(h) * 3 + static_cast<size_t>(k)) * 2;
          mean[k] = layer.sums[i + 1] > 0 ? static_cast<float>(layer.sums[i] / layer.sums[i + 1]) : 0.0f;
        }
        kv::HeadScore s;
        s.needle = mean[0];
        s.induction = mean[1];
        s.echo = mean[2];
        s.score = std::max({s.needle, s.induction, s.echo});
        p.heads.push_back(s);
      }
    return p;
  }

 private:
  struct Layer {
    std::mutex mutex;
    std::vector<double> sums;  // [n_head_kv][needle, induction, echo][sum, count]
  };
  int32_t n_head_kv_;
  std::vector<Layer> layers_;  // [n_layer]
  ScoringTarget target_;
};

std::string base_name(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

Result<kv::HeadProfile> calibrate_heads(const model::Model& model, const tokenizer::Tokenizer& tokenizer,
                                        const CalibrationOptions& options,
                                        const std::function<void(const std::string&)>& progress) {
  if (options.passkey_samples < 0 || options.repeat_samples < 0 || options.passkey_samples + options.repeat_samples == 0)
    return Status::error("calibrate-heads: no samples");
  if (options.passkey_length < 64 || options.repeat_tokens < 8)
    return Status::error("calibrate-heads: passkey length must be >= 64 and the repeated sequence >= 8 tokens");
  generate::SessionOptions so;
  so.n_threads = options.n_threads;
  so.n_ctx = std::max(options.passkey_length + 64, 2 * options.repeat_tokens + 8);
  auto owned = std::make_unique<HeadScorer>(generate::kv_policy_context(model));
  HeadScorer* scorer = owned.get();
  LH_ASSIGN_OR_RETURN(std::unique_ptr<generate::Session> session,
                      generate::Session::create(model, so, std::move(owned)));

  std::mt19937_64 rng(options.seed);
  const int32_t n_total = options.passkey_samples + options.repeat_samples;
  int32_t i_sample = 0;
  auto report = [&](const std::string& what) {
    if (progress)
      progress("calibrating heads: " + what + " (sample " + std::to_string(i_sample + 1) + "/" +
               std::to_string(n_total) + ")");
  };

  std::uniform_int_distribution<int> digits(10000, 99999);
  for (int32_t s = 0; s < options.passkey_samples; ++s, ++i_sample) {
    const double depth = (s + 0.5) / options.passkey_samples;
    const std::string key = std::to_string(digits(rng));
    report("passkey, " + std::to_string(options.passkey_length) + " tokens, depth " + std::to_string(depth).substr(0, 4));
    PasskeyPrompt prompt = build_passkey_prompt(tokenizer, options.passkey_length, depth, key);
    // The question starts after the last filler: its queries, and those of the key that follows (teacher forcing),
    // are the ones that must retrieve the key sentence.
    const std::vector<int32_t> answer = tokenizer.encode(" " + key, false, false);
    const std::vector<int32_t> question = tokenizer.encode(" What is the pass key? The pass key is", false, false);
    ScoringTarget t;
    t.kind = ScoringTarget::Kind::kNeedle;
    t.first_query = static_cast<int32_t>(prompt.tokens.size() - std::min(prompt.tokens.size(), question.size()));
    t.target_begin = prompt.key_begin;
    t.target_end = prompt.key_end;
    prompt.tokens.insert(prompt.tokens.end(), answer.begin(), answer.end());
    session->reset();
    scorer->set_target(t);
    LH_RETURN_IF_ERROR(session->feed(prompt.tokens));
  }

  // Random tokens away from the special ones at the start of most vocabularies, and not control tokens.
  const int32_t n_vocab = tokenizer.n_vocab();
  const int32_t lo = std::min(1000, n_vocab / 4), hi = std::min(n_vocab - 1, 32000);
  std::uniform_int_distribution<int32_t> token(lo, hi);
  for (int32_t s = 0; s < options.repeat_samples; ++s, ++i_sample) {
    report("repeated random tokens, 2 x " + std::to_string(options.repeat_tokens));
    std::vector<int32_t> seq;
    while (static_cast<int32_t>(seq.size()) < options.repeat_tokens) {
      const int32_t id = token(rng);
      if (!tokenizer.is_control(id)) seq.push_back(id);
    }
    std::vector<int32_t> tokens;
    if (tokenizer.bos_id() >= 0) tokens.push_back(tokenizer.bos_id());
    const auto first = static_cast<int32_t>(tokens.size());
    tokens.insert(tokens.end(), seq.begin(), seq.end());
    tokens.insert(tokens.end(), seq.begin(), seq.end());
    ScoringTarget t;
    t.kind = ScoringTarget::Kind::kRepeat;
    t.period = options.repeat_tokens;
    t.first_query = first + options.repeat_tokens;
    session->reset();
    scorer->set_target(t);
    LH_RETURN_IF_ERROR(session->feed(tokens));
  }
  return scorer->profile(base_name(model.file().path()));
}

}  // namespace longhaul::eval
