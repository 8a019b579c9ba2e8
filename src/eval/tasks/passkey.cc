// passkey: retrieval accuracy by prompt length and key depth through the policy.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include "base/sys_info.h"
#include "eval/greedy_answer.h"
#include "eval/passkey.h"
#include "eval/task.h"

namespace longhaul::eval {

namespace {
constexpr const char* kIntro =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there.";
constexpr const char* kFiller =
    " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
constexpr const char* kQuestion = " What is the pass key? The pass key is";
}  // namespace

PasskeyPrompt build_passkey_prompt(const tokenizer::Tokenizer& tok, int32_t n_tokens, double depth,
                                   const std::string& key) {
  const std::vector<int32_t> intro = tok.encode(kIntro, true, false);
  const std::vector<int32_t> filler = tok.encode(kFiller, false, false);
  const std::vector<int32_t> key_sentence =
      tok.encode(" The pass key is " + key + ". Remember it. " + key + " is the pass key.", false, false);
  const std::vector<int32_t> question = tok.encode(kQuestion, false, false);
  const int64_t fixed = static_cast<int64_t>(intro.size() + key_sentence.size() + question.size());
  const int64_t n_fill = std::max<int64_t>(0, (n_tokens - fixed) / static_cast<int64_t>(filler.size()));
  const int64_t n_before = std::llround(std::clamp(depth, 0.0, 1.0) * static_cast<double>(n_fill));
  PasskeyPrompt p;
  p.tokens = intro;
  for (int64_t i = 0; i < n_before; ++i) p.tokens.insert(p.tokens.end(), filler.begin(), filler.end());
  p.key_begin = static_cast<int32_t>(p.tokens.size());
  p.tokens.insert(p.tokens.end(), key_sentence.begin(), key_sentence.end());
  p.key_end = static_cast<int32_t>(p.tokens.size());
  for (int64_t i = n_before; i < n_fill; ++i) p.tokens.insert(p.tokens.end(), filler.begin(), filler.end());
  p.tokens.insert(p.tokens.end(), question.begin(), question.end());
  return p;
}

bool passkey_correct(const std::string& answer, const std::string& key) { return answer.find(key) != std::string::npos; }

namespace {

class PasskeyTask final : public Task {
 public:
  std::string name() const override { return "passkey"; }

  // Every key has five digits, so one prompt per length tells whether the fixed text fits.
  Status check(const tokenizer::Tokenizer& tokenizer, const EvalSpec& spec) override {
    for (int32_t length : spec.lengths) {
      const size_t n = build_passkey_prompt(tokenizer, length, 0.5, "12345").tokens.size();
      if (n > static_cast<size_t>(length)) {
        const size_t shortest = build_passkey_prompt(tokenizer, 1, 0.5, "12345").tokens.size();
        return Status::error("passkey: length " + std::to_string(length) + " is shorter than the task's fixed text (" +
                             std::to_string(shortest) + " tokens with this tokenizer); give lengths of at least " +
                             std::to_string(shortest));
      }
    }
    return Status::ok();
  }

  Status run(const TaskContext& ctx) override {
    const EvalSpec& spec = ctx.spec;
    generate::SessionOptions so = ctx.session;
    const int32_t max_len = *std::max_element(spec.lengths.begin(), spec.lengths.end());
    so.n_ctx = std::max(so.n_ctx, max_len + spec.max_new_tokens + 64);
    LH_ASSIGN_OR_RETURN(std::unique_ptr<generate::Session> session, generate::Session::create(ctx.model, so));
    const std::string policy = session->describe_kv();
    std::mt19937_64 rng(spec.seed);
    std::uniform_int_distribution<int> digits(10000, 99999);
    const int64_t n_points = static_cast<int64_t>(spec.lengths.size() * spec.depths.size()) * spec.samples;
    int64_t i_point = 0;
    for (int32_t length : spec.lengths) {
      for (double depth : spec.depths) {
        RetrievalPoint point;
        for (int32_t s = 0; s < spec.samples; ++s, ++i_point) {
          const std::string key = std::to_string(digits(rng));
          const PasskeyPrompt prompt = build_passkey_prompt(ctx.tokenizer, length, depth, key);
          if (ctx.progress) {
            char line[160];
            std::snprintf(line, sizeof line, "passkey %s: length %d depth %.2f sample %d/%d (%lld/%lld)",
                          policy.c_str(), length, depth, s + 1, spec.samples, static_cast<long long>(i_point + 1),
                          static_cast<long long>(n_points));
            ctx.progress(line);
          }
          LH_ASSIGN_OR_RETURN(std::string answer, answer_greedily(*session, ctx.tokenizer, prompt.tokens,
                                                                  spec.max_new_tokens, nullptr, point));
          if (passkey_correct(answer, key)) point.score += 1;
        }
        const EvalRow row = point.row(policy, length, depth, spec.samples);
        if (ctx.emit) ctx.emit(row);
      }
    }
    return Status::ok();
  }
};

}  // namespace

std::unique_ptr<Task> make_passkey_task() { return std::make_unique<PasskeyTask>(); }

}  // namespace longhaul::eval
