#include "model/model.h"

#include <algorithm>
#include <cmath>

#include "kernels/ops.h"
#include "model/arch/architecture.h"

namespace longhaul::model {

Model::Model(gguf::GgufFile file, ModelConfig config, ModelWeights weights, const Architecture* arch)
    : file_(std::move(file)), config_(std::move(config)), weights_(std::move(weights)), arch_(arch) {}

Model::~Model() = default;

Result<std::unique_ptr<Model>> Model::load(const std::string& path) {
  LH_ASSIGN_OR_RETURN(gguf::GgufFile file, gguf::GgufFile::open(path));
  const std::optional<std::string> arch_name = file.get_string("general.architecture");
  if (!arch_name) return Status::error(path + ": missing metadata key 'general.architecture'");
  const Architecture* arch = find_architecture(*arch_name);
  if (arch == nullptr)
    return Status::error(path + ": unsupported architecture '" + *arch_name + "' (supported: " +
                         supported_architectures() + ")");
  Result<ModelConfig> config = arch->read_config(file);
  if (!config) return Status::error(path + ": " + config.message());
  ModelWeights weights;
  Status bound = arch->bind_weights(file, *config, weights);
  if (!bound) return Status::error(path + ": " + bound.message());
  std::unique_ptr<Model> model(new Model(std::move(file), std::move(config).value(), std::move(weights), arch));
  Status interleaved = model->interleave_weights();
  if (!interleaved) return Status::error(path + ": " + interleaved.message());
  return model;
}

namespace {
// Interleaving copies a matrix this many bytes at a time, releasing the file's pages behind it.
constexpr int64_t kInterleaveSliceBytes = int64_t{4} << 20;
}  // namespace

Status Model::interleave_weights() {
  // A tied output projection is the token embedding matrix: stored once, interleaved, and the embedding lookup
  // reads that copy (kernels::get_rows_interleaved), so the file's row-major pages are not faulted back in.
  const bool tied = weights_.output.data == weights_.token_embd.data;
  std::vector<Weight*> matrices = {&weights_.output};
  for (LayerWeights& l : weights_.layers) {
    for (Weight* w : {&l.attn_q, &l.attn_k, &l.attn_v, &l.attn_output, &l.ffn_gate, &l.ffn_up, &l.ffn_down})
      matrices.push_back(w);
  }
  std::erase_if(matrices, [](const Weight* w) {
    return !w->present() || !kernels::prefers_interleaved(w->type, w->n_out);
  });
  // Each copy starts 64-byte aligned (the kernels read whole 64-byte chunks of a group).
  auto matrix_bytes = [](const Weight* w) { return tensor::row_size_bytes(w->type, w->n_in) * w->n_out; };
  int64_t total = 0;
  for (const Weight* w : matrices) total += (matrix_bytes(w) + 63) / 64 * 64;
  LH_ASSIGN_OR_RETURN(interleaved_, HugePageBuffer::allocate(static_cast<size_t>(total)));
  uint8_t* next = interleaved_.data();
  for (Weight* w : matrices) {
    uint8_t* dst = next;
    next += (matrix_bytes(w) + 63) / 64 * 64;
    // Slice by slice, handing the file's pages back as they are copied: the file's copy is not read again (a
    // tied output's embedding lookups read the interleaved copy too), so resident memory holds each matrix once,
    // also at its peak during the load.
    const int64_t row_bytes = tensor::row_size_bytes(w->type, w->n_in);
    const int64_t rows_per_slice =
        std::max<int64_t>(1, kInterleaveSliceBytes / (row_bytes * kernels::kInterleaveRows)) * kernels::kInterleaveRows;
    const auto* src = static_cast<const uint8_t*>(w->data);
    for (int64_t r = 0; r < w->n_out; r += rows_per_slice) {
      const int64_t n_rows = std::min(rows_per_slice, w->n_out - r);
      kernels::interleave_rows(w->type, src + r * row_bytes, n_rows, w->n_in, dst + r * row_bytes);
      file_.release_pages(src + r * row_bytes, static_cast<size_t>(n_rows * row_bytes));
    }
    w->data = dst;
    w->layout = kernels::WeightLayout::kInterleaved16;
  }
  if (tied) weights_.token_embd = weights_.output;
  return Status::ok();
}

kv::KvShape Model::kv_shape() const {
  kv::KvShape s;
  s.n_layer = config_.n_layer;
  s.n_head_kv = config_.n_head_kv;
  s.head_dim_k = config_.head_dim_k;
  s.head_dim_v = config_.head_dim_v;
  return s;
}

int64_t Model::weight_bytes_per_token(const SublayerSkip& skip) const {
  auto bytes = [](const Weight& w) {
    return w.present() ? tensor::row_size_bytes(w.type, w.n_in) * w.n_out : int64_t{0};
  };
  int64_t total = bytes(weights_.output) + bytes(weights_.output_norm);
  for (int32_t il = 0; il < config_.n_layer; ++il) {
    const LayerWeights& l = weights_.layers[static_cast<size_t>(il)];
    if (!skip.skips(il, kv::SublayerKind::kAttention))
      for (const Weight* w : {&l.attn_norm, &l.attn_q, &l.attn_k, &l.attn_v, &l.attn_output, &l.attn_q_norm,
                              &l.attn_k_norm, &l.attn_post_norm})
        total += bytes(*w);
    if (!skip.skips(il, kv::SublayerKind::kFeedForward))
      for (const Weight* w : {&l.ffn_norm, &l.ffn_gate, &l.ffn_up, &l.ffn_down, &l.ffn_post_norm}) total += bytes(*w);
  }
  return total;
}

namespace {

void resize_state(ForwardState& st, const ModelConfig& cfg, int32_t n_tokens, int n_threads) {
  auto grow = [](std::vector<float>& v, int64_t n) {
    if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  };
  const int64_t t = n_tokens;
  grow(st.x, t * cfg.n_embd);
  grow(st.xn, t * cfg.n_embd);
  grow(st.q, t * cfg.n_head * cfg.head_dim_k);
  grow(st.k, t * cfg.n_head_kv * cfg.head_dim_k);
  grow(st.v, t * cfg.n_head_kv * cfg.head_dim_v);
  grow(st.attn, t * cfg.n_head * cfg.head_dim_v);
  grow(st.proj, t * cfg.n_embd);
  grow(st.gate, t * cfg.n_ff);
  grow(st.up, t * cfg.n_ff);
  if (st.attention_threads.size() < static_cast<size_t>(n_threads)) st.attention_threads.resize(static_cast<size_t>(n_threads));
  if (st.matmul.empty()) st.matmul.resize(1);
}

}  // namespace

Status Model::forward(const Batch& batch, kv::KvCache& cache, ForwardState& st, ThreadPool& pool, Outputs& out,
                      std::span<const StepPolicy> policies, const SublayerSkip& skip) const {
  const ModelConfig& cfg = config_;
  LH_CHECK_MSG(skip.n_layer() == 0 || skip.n_layer() == cfg.n_layer, "sub-layer set made for another model");
  const int32_t n_tokens = batch.size();
  if (n_tokens == 0) return Status::error("empty batch");
  if (batch.positions.size() != batch.tokens.size() || batch.seq_ids.size() != batch.tokens.size() ||
      batch.outputs.size() != batch.tokens.size() || (!batch.parents.empty() && batch.parents.size() != batch.tokens.size()))
    return Status::error("batch arrays have different lengths");
  for (int32_t i = 0; i < static_cast<int32_t>(batch.parents.size()); ++i) {
    const int32_t parent = batch.parents[static_cast<size_t>(i)];
    if (parent == kStepRoot) continue;
    if (parent < 0 || parent >= i || batch.seq_ids[static_cast<size_t>(parent)] != batch.seq_ids[static_cast<size_t>(i)] ||
        batch.positions[static_cast<size_t>(parent)] + 1 != batch.positions[static_cast<size_t>(i)])
      return Status::error("batch token " + std::to_string(i) + " names parent " + std::to_string(parent) +
                           ", which is not an earlier token of its sequence at the position before it");
  }
  for (int32_t i = 0; i < n_tokens; ++i) {
    const int32_t tok = batch.tokens[static_cast<size_t>(i)];
    if (tok < 0 || tok >= cfg.n_vocab)
      return Status::error("token id " + std::to_string(tok) + " is outside the vocabulary [0, " +
                           std::to_string(cfg.n_vocab) + ")");
    if (!cache.has_sequence(batch.seq_ids[static_cast<size_t>(i)]))
      return Status::error("batch names sequence " + std::to_string(batch.seq_ids[static_cast<size_t>(i)]) +
                           ", which the KV cache does not hold");
    if (batch.positions[static_cast<size_t>(i)] < 0) return Status::error("negative position in batch");
  }

  // Reserve one cell per token in its sequence. Tokens of one sequence are
  // contiguous runs or interleaved; group them per sequence, keeping order.
  st.cells.assign(static_cast<size_t>(n_tokens), -1);
  {
    std::vector<kv::SeqId> seqs(batch.seq_ids.begin(), batch.seq_ids.end());
    std::sort(seqs.begin(), seqs.end());
    seqs.erase(std::unique(seqs.begin(), seqs.end()), seqs.end());
    // Check every sequence fits before appending to any, so a failure leaves the cache unchanged.
    for (kv::SeqId s : seqs) {
      const int32_t n_new = static_cast<int32_t>(std::count(batch.seq_ids.begin(), batch.seq_ids.end(), s));
      LH_RETURN_IF_ERROR(cache.check_room(s, n_new));
    }
    std::vector<int32_t> positions;
    for (kv::SeqId s : seqs) {
      positions.clear();
      for (int32_t i = 0; i < n_tokens; ++i)
        if (batch.seq_ids[static_cast<size_t>(i)] == s) positions.push_back(batch.positions[static_cast<size_t>(i)]);
      LH_ASSIGN_OR_RETURN(int32_t first, cache.append_cells(s, positions));
      for (int32_t i = 0; i < n_tokens; ++i)
        if (batch.seq_ids[static_cast<size_t>(i)] == s) st.cells[static_cast<size_t>(i)] = first++;
    }
  }

  resize_state(st, cfg, n_tokens, pool.n_threads());
  st.plan.build(batch, st.cells, cache, policies);

  st.rope_global.compute(batch.positions.data(), n_tokens, cfg.n_rot, cfg.rope_freq_base, cfg.rope_freq_scale);
  if (cfg.sliding_window > 0)
    // Local layers are never position-scaled (Gemma 3 scales only its global layers).
    st.rope_local.compute(batch.positions.data(), n_tokens, cfg.n_rot, cfg.rope_freq_base_local, 1.0f);

  // Token embeddings: x = embd[tokens] * embedding_scale.   x: [n_tokens, n_embd]
  const Weight& embd = weights_.token_embd;
  if (embd.layout == kernels::WeightLayout::kInterleaved16) {
    kernels::get_rows_interleaved(embd.type, embd.data, cfg.n_embd, batch.tokens.data(), n_tokens, st.x.data());
  } else {
    kernels::get_rows(embd.type, embd.data, cfg.n_embd, batch.tokens.data(), n_tokens, st.x.data());
  }
  if (cfg.embedding_scale != 1.0f) kernels::scale(st.x.data(), cfg.embedding_scale, int64_t{n_tokens} * cfg.n_embd);

  StepContext step{cfg, weights_, batch, cache, st, pool, n_tokens};
  for (int32_t il = 0; il < cfg.n_layer; ++il) {
    if (!skip.skips(il, kv::SublayerKind::kAttention)) arch_->attention_sublayer(step, il);
    if (!skip.skips(il, kv::SublayerKind::kFeedForward)) arch_->feed_forward_sublayer(step, il);
  }

  // Embeddings: the final norm of the rows that ask for them.   embeddings: [n_embeddings, n_embd]
  const int32_t n_embeddings = batch.n_outputs(TokenOutput::kEmbedding);
  out.embeddings.resize(static_cast<size_t>(n_embeddings) * cfg.n_embd);
  for (int32_t i = 0, r = 0; i < n_tokens; ++i)
    if (batch.outputs[static_cast<size_t>(i)] == TokenOutput::kEmbedding)
      kernels::rms_norm(st.x.data() + int64_t{i} * cfg.n_embd, weights_.output_norm.f32(),
                        out.embeddings.data() + int64_t{r++} * cfg.n_embd, cfg.n_embd, cfg.rms_eps);

  // Final norm and output projection, only for the rows whose logits are wanted.
  st.out_rows.clear();
  for (int32_t i = 0; i < n_tokens; ++i)
    if (batch.outputs[static_cast<size_t>(i)] == TokenOutput::kLogits) st.out_rows.push_back(i);
  const auto n_out = static_cast<int64_t>(st.out_rows.size());
  out.logits.resize(static_cast<size_t>(n_out * cfg.n_vocab));
  if (n_out == 0) return Status::ok();
  for (int64_t r = 0; r < n_out; ++r)
    kernels::rms_norm(st.x.data() + int64_t{st.out_rows[static_cast<size_t>(r)]} * cfg.n_embd,
                      weights_.output_norm.f32(), st.xn.data() + r * cfg.n_embd, cfg.n_embd, cfg.rms_eps);
  const kernels::MatmulTarget head = matmul_target(weights_.output, out.logits.data());
  kernels::matmul_fused(&head, 1, cfg.n_embd, st.xn.data(), n_out, pool, st.matmul[0]);
  if (cfg.final_logit_softcap > 0.0f) {
    const float cap = cfg.final_logit_softcap;
    for (float& l : out.logits) l = cap * std::tanh(l / cap);
  }
  return Status::ok();
}

}  // namespace longhaul::model
