#include "generate/session.h"

namespace longhaul::generate {

namespace {
EngineOptions engine_options(const SessionOptions& options) {
  EngineOptions o;
  o.n_ctx = options.n_ctx;
  o.n_batch = options.n_batch;
  o.n_threads = options.n_threads;
  o.skip = options.skip;
  o.page_tokens = options.page_tokens;
  o.max_sequences = 1;
  o.max_tentative_tokens = 0;  // a session takes no tentative steps: a bounded policy keeps its exact budget
  return o;
}
SequenceOptions sequence_options(const SessionOptions& options) {
  SequenceOptions s;
  s.kv_policy = options.kv_policy;
  s.head_profile = options.head_profile;
  s.prefill_attn = options.prefill_attn;
  return s;
}
}  // namespace

Result<std::unique_ptr<Session>> Session::create(const model::Model& model, const SessionOptions& options) {
  LH_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::create(model, engine_options(options)));
  LH_ASSIGN_OR_RETURN(const kv::SeqId seq, engine->add_sequence(sequence_options(options)));
  return std::unique_ptr<Session>(new Session(std::move(engine), seq));
}

Result<std::unique_ptr<Session>> Session::create(const model::Model& model, const SessionOptions& options,
                                                 std::unique_ptr<kv::KvPolicy> policy) {
  LH_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::create(model, engine_options(options)));
  LH_ASSIGN_OR_RETURN(const kv::SeqId seq, engine->add_sequence(sequence_options(options), std::move(policy)));
  return std::unique_ptr<Session>(new Session(std::move(engine), seq));
}

Session::Session(std::unique_ptr<Engine> engine, kv::SeqId seq) : engine_(std::move(engine)), seq_(seq) {}
Session::~Session() = default;

void Session::reset() { engine_->clear(seq_); }

void Session::truncate(int32_t n_keep) { engine_->truncate(seq_, n_keep); }

Status Session::feed(std::span<const int32_t> tokens, const ProgressFn& progress) {
  return engine_->feed(seq_, tokens, &logits_, nullptr, progress);
}

Status Session::feed_all_logits(std::span<const int32_t> tokens, std::vector<float>& out) {
  LH_RETURN_IF_ERROR(engine_->feed(seq_, tokens, &logits_, &out));
  return Status::ok();
}

}  // namespace longhaul::generate
