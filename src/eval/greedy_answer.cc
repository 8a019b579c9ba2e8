#include "eval/greedy_answer.h"

#include <algorithm>
#include <vector>

#include "base/sys_info.h"

namespace longhaul::eval {

EvalRow RetrievalPoint::row(const std::string& policy, int32_t length, double depth, int32_t samples) const {
  EvalRow r;
  r.policy = policy;
  r.length = length;
  r.depth = depth;
  r.accuracy = score / samples;
  r.kv_bytes = kv_bytes;
  r.peak_rss_bytes = peak_rss_bytes();
  if (prefill_s > 0) r.prefill_tps = static_cast<double>(n_prefill) / prefill_s;
  if (decode_s > 0 && n_decode > 0) r.decode_tps = static_cast<double>(n_decode) / decode_s;
  return r;
}

Result<std::string> answer_greedily(generate::Session& session, const tokenizer::Tokenizer& tokenizer,
                                    std::span<const int32_t> prompt, int32_t max_new,
                                    const std::function<bool(const std::string&)>& done, RetrievalPoint& point) {
  session.reset();
  double t0 = now_seconds();
  LH_RETURN_IF_ERROR(session.feed(prompt));
  point.prefill_s += now_seconds() - t0;
  point.n_prefill += static_cast<int64_t>(prompt.size());
  const int32_t n_vocab = session.model().config().n_vocab;
  std::vector<int32_t> answer;
  t0 = now_seconds();
  for (int32_t i = 0; i < max_new; ++i) {
    const float* logits = session.logits();
    const int32_t next = static_cast<int32_t>(std::max_element(logits, logits + n_vocab) - logits);
    if (tokenizer.is_end_of_generation(next)) break;
    answer.push_back(next);
    if (i + 1 == max_new || (done && done(tokenizer.decode(answer)))) break;
    const int32_t one[1] = {next};
    LH_RETURN_IF_ERROR(session.feed(one));
    ++point.n_decode;
  }
  point.decode_s += now_seconds() - t0;
  point.kv_bytes = std::max(point.kv_bytes, session.cache().used_bytes());
  return tokenizer.decode(answer);
}

}  // namespace longhaul::eval
