#include "model/blocks.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/ops.h"
#include "kernels/quant.h"
#include "model/model.h"
#include "tensor/half.h"

namespace longhaul::model {

void norm_rows(StepContext& step, const float* in, const Weight& w, float* out, int64_t n_rows, int64_t n) {
  const float* wv = w.present() ? w.f32() : nullptr;
  const float eps = step.config.rms_eps;
  for (int64_t r = 0; r < n_rows; ++r) kernels::rms_norm(in + r * n, wv, out + r * n, n, eps);
}

void project(StepContext& step, const Weight& w, const float* in, int64_t n_rows, float* out) {
  kernels::matmul(w.type, w.data, w.n_out, w.n_in, in, n_rows, out, w.n_out, step.pool, step.state.matmul[0]);
}

void add_residual(StepContext& step, float* x, const float* delta) {
  kernels::add(x, delta, x, static_cast<int64_t>(step.n_tokens) * step.config.n_embd);
}

namespace {

// W as one output of a fused product writing [n_tokens, W.n_out] rows to `out`.
kernels::MatmulTarget matmul_target(const Weight& w, float* out) { return {w.type, w.data, w.n_out, out, w.n_out}; }

// Attention of one query head of one token over the cells of its sequence.
//   q:      [head_dim_k] (already scaled)
//   head:   the policy's span of this KV head (sinks + window), on top of the layer's window
//   out:    [head_dim_v], or null: probabilities only
//   scores: [n_cells] scratch; on return the attention probabilities (0 for masked cells)
void attend_one(const kv::KvCache& cache, kv::SeqId seq, int32_t il, int32_t kv_head, int32_t query_pos,
                int32_t window, const kv::HeadSpan& head, const float* q, int32_t dk, int32_t dv, float* scores,
                float* out) {
  const int32_t n_cells = cache.n_cells(seq, il);
  const std::span<const int32_t> positions = cache.positions(seq, il);
  const int32_t n_pages = cache.n_pages(seq, il);
  thread_local kv::KvCache::Scratch scratch;  // quantized pages are dequantized here, one page at a time
  auto visible = [&](int32_t c) {
    const int32_t p = positions[static_cast<size_t>(c)];
    return p <= query_pos && (window <= 0 || query_pos - p < window) &&
           (head.window <= 0 || p < head.n_sink || query_pos - p < head.window);
  };
  // Calls fn(first, count, first_row) for each run of consecutive visible cells inside one page: the keys (values)
  // of a head in a run are contiguous rows, so one kernel call serves the run. Row 0 of the page is cell
  // page.first_cell.
  auto for_each_visible_run = [&](bool keys, auto&& fn) {
    for (int32_t ip = 0; ip < n_pages; ++ip) {
      const kv::KvCache::PageSpan page = cache.page_span(seq, il, ip);
      const int32_t page_end = page.first_cell + page.n_cells;
      kv::KvCache::HeadRows rows;
      if (!cache.head_rows_present(seq, il, kv_head, ip)) continue;  // freed rows: invisible to this head
      for (int32_t c = page.first_cell; c < page_end;) {
        if (!visible(c)) {
          ++c;
          continue;
        }
        int32_t e = c + 1;
        while (e < page_end && visible(e)) ++e;
        if (rows.keys == nullptr && rows.values == nullptr) rows = cache.head_rows(seq, il, kv_head, ip, scratch, keys, !keys);
        const int64_t row = c - page.first_cell;
        fn(c, e - c, keys ? rows.keys + row * dk : rows.values + row * dv);
        c = e;
      }
    }
  };
  std::fill(scores, scores + n_cells, -INFINITY);
  int32_t end = 0;  // one past the last visible cell (causal prompts: the cells after the query are all masked)
  for_each_visible_run(true, [&](int32_t first, int32_t count, const uint16_t* k) {
    kernels::dot_f16_rows(q, k, dk, count, dk, scores + first);
    end = first + count;
  });
  if (out != nullptr) std::fill(out, out + dv, 0.0f);
  if (end == 0) return;  // nothing visible: cannot happen for a token that sees itself
  // Masked cells get probability 0. Left normalised in `scores`: KV policies that rank cells by attention read it.
  kernels::softmax(scores, end);
  std::fill(scores + end, scores + n_cells, 0.0f);
  if (out == nullptr) return;
  for_each_visible_run(false, [&](int32_t first, int32_t count, const uint16_t* v) {
    kernels::accumulate_f16_rows(scores + first, v, dv, count, dv, out);
  });
}

// Flash attention (Dao et al., 2022) for every query of the step, used when no KV policy needs the probabilities.
// A task is a block of up to kFlashBlockTokens consecutive tokens of one sequence and one KV head: its queries
// (every query head of the KV head's group, for each token) pass over the sequence's cells page by page, so each
// key and value is converted once for all of them. When there are fewer tasks than threads (decode), the cells
// are also split into ranges whose partial results are merged at the end.
constexpr int32_t kFlashBlockTokens = 16;
constexpr int32_t kFlashMinCellsPerSplit = 256;
constexpr int32_t kFlashTasksPerThread = 4;

void attend_flash(StepContext& step, int32_t il, int32_t window) {
  const ModelConfig& cfg = step.config;
  ForwardState& st = step.state;
  const int32_t dk = cfg.head_dim_k, dv = cfg.head_dim_v;
  const int32_t n_head = cfg.n_head, n_head_kv = cfg.n_head_kv, group = n_head / n_head_kv;
  const int64_t q_row = static_cast<int64_t>(n_head) * dk;  // q: [n_tokens, n_head * dk]

  // Token blocks: [block_start[b], block_start[b + 1]) share a sequence.
  thread_local std::vector<int32_t> block_start;
  block_start.clear();
  for (int32_t t = 0; t < step.n_tokens; ++t) {
    const bool new_block = block_start.empty() || t - block_start.back() == kFlashBlockTokens ||
                           step.batch.seq_ids[static_cast<size_t>(t)] != step.batch.seq_ids[static_cast<size_t>(t - 1)];
    if (new_block) block_start.push_back(t);
  }
  const auto n_blocks = static_cast<int32_t>(block_start.size());
  block_start.push_back(step.n_tokens);
  // Worker threads have thread_local vectors of their own: the task lambda reads the caller's through a pointer.
  const int32_t* const starts = block_start.data();

  int32_t max_cells = 0, max_pages = 0;
  for (int32_t b = 0; b < n_blocks; ++b) {
    const kv::SeqId seq = step.batch.seq_ids[static_cast<size_t>(block_start[b])];
    max_cells = std::max(max_cells, step.cache.n_cells(seq, il));
    max_pages = std::max(max_pages, step.cache.n_pages(seq, il));
  }
  // About kFlashTasksPerThread tasks per thread, so that threads finish together; a split keeps at least
  // kFlashMinCellsPerSplit cells, below which merging costs more than it saves.
  int32_t n_splits = 1;
  const int64_t n_units = static_cast<int64_t>(n_blocks) * n_head_kv;
  const int64_t want_tasks = static_cast<int64_t>(kFlashTasksPerThread) * step.pool.n_threads();
  if (step.pool.n_threads() > 1 && n_units < want_tasks)
    n_splits = std::max(1, std::min<int32_t>(static_cast<int32_t>((want_tasks + n_units - 1) / n_units),
                                             max_cells / kFlashMinCellsPerSplit));
  // Splits are whole pages. With f16 pages (all full but the last) this is ceil(max_cells / (n_splits * page))
  // pages, the same boundaries as splitting the cells into page multiples.
  const int32_t pages_per_split = (max_pages + n_splits - 1) / n_splits;

  // Per task: m, l and o of its queries ([n_q] + [n_q] + [n_q, dv]).
  const int32_t max_q = kFlashBlockTokens * group;
  const int64_t task_floats = static_cast<int64_t>(max_q) * (dv + 2);
  const int64_t n_tasks = n_units * n_splits;
  thread_local std::vector<float> partials;
  if (static_cast<int64_t>(partials.size()) < n_tasks * task_floats)
    partials.resize(static_cast<size_t>(n_tasks * task_floats));
  float* const partials_base = partials.data();

  step.pool.for_each_chunk(n_tasks, [&](int64_t task, int) {
    thread_local std::vector<float> q_buf;     // [n_q, dk]
    thread_local std::vector<int32_t> q_pos;  // [n_q]
    const int32_t split = static_cast<int32_t>(task % n_splits);
    const int64_t unit = task / n_splits;
    const int32_t b = static_cast<int32_t>(unit / n_head_kv), kv_head = static_cast<int32_t>(unit % n_head_kv);
    const int32_t t0 = starts[b], t1 = starts[b + 1];
    const int32_t n_q = (t1 - t0) * group;
    q_buf.resize(static_cast<size_t>(max_q) * dk);
    q_pos.resize(static_cast<size_t>(max_q));
    for (int32_t t = t0; t < t1; ++t) {
      for (int32_t g = 0; g < group; ++g) {
        const int32_t i = (t - t0) * group + g;
        const float* src = st.q.data() + t * q_row + static_cast<int64_t>(kv_head * group + g) * dk;
        std::copy(src, src + dk, q_buf.data() + static_cast<int64_t>(i) * dk);
        q_pos[static_cast<size_t>(i)] = step.batch.positions[static_cast<size_t>(t)];
      }
    }
    float* m = partials_base + task * task_floats;
    float* l = m + max_q;
    float* o = l + max_q;
    std::fill(m, m + n_q, -INFINITY);
    std::fill(l, l + n_q, 0.0f);
    std::fill(o, o + static_cast<int64_t>(n_q) * dv, 0.0f);
    const kv::SeqId seq = step.batch.seq_ids[static_cast<size_t>(t0)];
    const int32_t* positions = step.cache.positions(seq, il).data();
    const int32_t p_end = std::min(step.cache.n_pages(seq, il), (split + 1) * pages_per_split);
    // Keys of a head are contiguous rows within a page: one update per page. An f16 page is read in place; a
    // quantized one (KIVI storage) is dequantized to f16 rows in `scratch` first, so the kernels stay the same.
    thread_local kv::KvCache::Scratch scratch;
    // A policy may narrow this head to sinks + a window (DuoAttention's streaming heads) on a global layer.
    const kv::HeadSpan head = window == 0 && step.policy != nullptr && step.policy->has_head_spans()
                                  ? step.policy->head_span(il, kv_head)
                                  : kv::HeadSpan{};
    for (int32_t ip = split * pages_per_split; ip < p_end; ++ip) {
      const kv::KvCache::PageSpan span = step.cache.page_span(seq, il, ip);
      const kv::KvCache::HeadRows rows = step.cache.head_rows(seq, il, kv_head, ip, scratch);
      if (rows.keys == nullptr) continue;  // this head's rows were freed: no query of it sees these cells
      const int32_t* page_pos = positions + span.first_cell;
      if (head.window == 0) {
        kernels::attention_update(q_buf.data(), dk, q_pos.data(), n_q, rows.keys, dk, rows.values, dv, page_pos,
                                  span.n_cells, window, dk, dv, m, l, o, dv);
        continue;
      }
      // Positions ascend within a page: the leading cells at positions < n_sink are sinks (causal mask only),
      // the others are seen within the head's window.
      const auto n_sink_cells = static_cast<int32_t>(
          std::lower_bound(page_pos, page_pos + span.n_cells, head.n_sink) - page_pos);
      if (n_sink_cells > 0)
        kernels::attention_update(q_buf.data(), dk, q_pos.data(), n_q, rows.keys, dk, rows.values, dv, page_pos,
                                  n_sink_cells, 0, dk, dv, m, l, o, dv);
      if (n_sink_cells < span.n_cells)
        kernels::attention_update(q_buf.data(), dk, q_pos.data(), n_q, rows.keys + static_cast<int64_t>(n_sink_cells) * dk,
                                  dk, rows.values + static_cast<int64_t>(n_sink_cells) * dv, dv, page_pos + n_sink_cells,
                                  span.n_cells - n_sink_cells, head.window, dk, dv, m, l, o, dv);
    }
  });

  // Merge the splits of each unit (rescaling each to the common maximum) and normalise into st.attn.
  for (int64_t unit = 0; unit < n_units; ++unit) {
    const int32_t b = static_cast<int32_t>(unit / n_head_kv), kv_head = static_cast<int32_t>(unit % n_head_kv);
    const int32_t t0 = block_start[b], t1 = block_start[b + 1];
    for (int32_t i = 0; i < (t1 - t0) * group; ++i) {
      const int32_t t = t0 + i / group, h = kv_head * group + i % group;
      float* out = st.attn.data() + static_cast<int64_t>(t) * n_head * dv + static_cast<int64_t>(h) * dv;
      float m_all = -INFINITY;
      for (int32_t s = 0; s < n_splits; ++s)
        m_all = std::max(m_all, partials_base[(unit * n_splits + s) * task_floats + i]);
      std::fill(out, out + dv, 0.0f);
      if (m_all == -INFINITY) continue;  // nothing visible: cannot happen for a token that sees itself
      float l_all = 0.0f;
      for (int32_t s = 0; s < n_splits; ++s) {
        const float* m = partials_base + (unit * n_splits + s) * task_floats;
        if (m[i] == -INFINITY) continue;
        const float w = std::exp(m[i] - m_all);
        l_all += w * m[max_q + i];
        const float* o = m + 2 * max_q + static_cast<int64_t>(i) * dv;
        for (int32_t c = 0; c < dv; ++c) out[c] += w * o[c];
      }
      const float inv = 1.0f / l_all;
      for (int32_t c = 0; c < dv; ++c) out[c] *= inv;
    }
  }
}

}  // namespace

void self_attention(StepContext& step, int32_t il) {
  const ModelConfig& cfg = step.config;
  const LayerWeights& lw = step.weights.layers[static_cast<size_t>(il)];
  ForwardState& st = step.state;
  const int32_t n_tokens = step.n_tokens;
  const int32_t dk = cfg.head_dim_k, dv = cfg.head_dim_v;
  const int32_t n_head = cfg.n_head, n_head_kv = cfg.n_head_kv;
  const int64_t q_row = static_cast<int64_t>(n_head) * dk;     // q: [n_tokens, n_head * dk]
  const int64_t k_row = static_cast<int64_t>(n_head_kv) * dk;  // k: [n_tokens, n_head_kv * dk]
  const int64_t v_row = static_cast<int64_t>(n_head_kv) * dv;  // v: [n_tokens, n_head_kv * dv]

  // Q, K and V read the same input: one fused product quantizes it once and waits for the threads once.
  const kernels::MatmulTarget qkv[] = {matmul_target(lw.attn_q, st.q.data()), matmul_target(lw.attn_k, st.k.data()),
                                       matmul_target(lw.attn_v, st.v.data())};
  kernels::matmul_fused(qkv, 3, lw.attn_q.n_in, st.xn.data(), n_tokens, step.pool, st.matmul[0]);

  const bool local = cfg.is_local(il);
  const kernels::RopeAngles& angles = local ? st.rope_local : st.rope_global;
  const int32_t half_rot = cfg.n_rot / 2;
  const float scale = cfg.attention_scale > 0.0f ? cfg.attention_scale : 1.0f / std::sqrt(static_cast<float>(dk));

  // Per token: optional QK-norm (per head), RoPE, and the store of K/V into the cache (f16).
  step.pool.parallel_for(n_tokens, 1, [&](int64_t t_begin, int64_t t_end) {
    for (int64_t t = t_begin; t < t_end; ++t) {
      float* q = st.q.data() + t * q_row;
      float* k = st.k.data() + t * k_row;
      const float* v = st.v.data() + t * v_row;
      if (cfg.qk_norm) {
        for (int32_t h = 0; h < n_head; ++h) kernels::rms_norm(q + h * dk, lw.attn_q_norm.f32(), q + h * dk, dk, cfg.rms_eps);
        for (int32_t h = 0; h < n_head_kv; ++h)
          kernels::rms_norm(k + h * dk, lw.attn_k_norm.f32(), k + h * dk, dk, cfg.rms_eps);
      }
      const float* a = angles.cos_sin.data() + t * half_rot * 2;
      kernels::rope(q, n_head, dk, cfg.n_rot, a, cfg.rope_style);
      kernels::rope(k, n_head_kv, dk, cfg.n_rot, a, cfg.rope_style);
      kernels::scale(q, scale, q_row);
      const kv::SeqId seq = step.batch.seq_ids[static_cast<size_t>(t)];
      const int32_t cell = st.cells[static_cast<size_t>(t)];
      for (int32_t h = 0; h < n_head_kv; ++h) {
        kernels::f32_to_f16_row(k + h * dk, step.cache.key(seq, il, h, cell), dk);
        kernels::f32_to_f16_row(v + h * dv, step.cache.value(seq, il, h, cell), dv);
      }
    }
  });

  // Attention. GQA maps query head h to KV head h / (n_head / n_head_kv).
  const int32_t window = local ? cfg.sliding_window : 0;
  const int32_t group = n_head / n_head_kv;
  attend_flash(step, il, window);
  // A KV policy that reads the probabilities gets every query's row from a second pass (one task per token and
  // query head); the output above stays the same with or without it, bit for bit.
  const bool observe = step.policy != nullptr && step.policy->needs_scores();
  if (observe) {
    const int64_t n_tasks = static_cast<int64_t>(n_tokens) * n_head;
    const int64_t scores_stride = static_cast<int64_t>(st.scores.size()) / step.pool.n_threads();
    // Tasks are claimed one at a time (later tokens of a prompt see more keys); scores are per running thread.
    step.pool.for_each_chunk(n_tasks, [&](int64_t task, int i_thread) {
      float* scores = st.scores.data() + i_thread * scores_stride;
      const int64_t t = task / n_head;
      const int32_t h = static_cast<int32_t>(task % n_head);
      const kv::SeqId seq = step.batch.seq_ids[static_cast<size_t>(t)];
      const int32_t query_pos = step.batch.positions[static_cast<size_t>(t)];
      if (!step.policy->wants_scores(query_pos)) return;
      const kv::HeadSpan head = window == 0 && step.policy->has_head_spans() ? step.policy->head_span(il, h / group)
                                                                             : kv::HeadSpan{};
      attend_one(step.cache, seq, il, h / group, query_pos, window, head,
                 st.q.data() + t * q_row + static_cast<int64_t>(h) * dk, dk, dv, scores, nullptr);
      // Score-based KV policies (H2O, TOVA, SnapKV) accumulate this row; no [n_query, n_key] matrix is kept.
      step.policy->observe_scores(seq, il, h / group, query_pos,
                                  std::span<const float>(scores, static_cast<size_t>(step.cache.n_cells(seq, il))));
    });
  }

  project(step, lw.attn_output, st.attn.data(), n_tokens, st.proj.data());
}

void feed_forward(StepContext& step, int32_t il) {
  const ModelConfig& cfg = step.config;
  const LayerWeights& lw = step.weights.layers[static_cast<size_t>(il)];
  ForwardState& st = step.state;
  const int32_t n_tokens = step.n_tokens;
  const kernels::MatmulTarget gate_up[] = {matmul_target(lw.ffn_gate, st.gate.data()),
                                           matmul_target(lw.ffn_up, st.up.data())};
  kernels::matmul_fused(gate_up, 2, lw.ffn_gate.n_in, st.xn.data(), n_tokens, step.pool, st.matmul[0]);
  const int64_t n = static_cast<int64_t>(n_tokens) * cfg.n_ff;
  // Chunks of 4096 elements: a decode step's row (n_ff of a few thousand) runs inline, without waking the pool.
  step.pool.parallel_for(n, 4096, [&](int64_t b, int64_t e) {
    if (cfg.activation == FfnActivation::kGelu) {
      kernels::gelu_mul(st.gate.data() + b, st.up.data() + b, st.gate.data() + b, e - b);
    } else {
      kernels::silu_mul(st.gate.data() + b, st.up.data() + b, st.gate.data() + b, e - b);
    }
  });
  project(step, lw.ffn_down, st.gate.data(), n_tokens, st.proj.data());
}

namespace {
std::string dims_string(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

Result<Weight> bind_impl(const gguf::GgufFile& file, const std::string& name, std::vector<int64_t> dims,
                         bool optional) {
  const gguf::TensorInfo* t = file.find_tensor(name);
  if (t == nullptr) {
    if (optional) return Weight{};
    return Status::error("missing tensor '" + name + "'");
  }
  // Trailing dims of 1 are equivalent ([576] == [576, 1]).
  std::vector<int64_t> got = t->dims;
  while (got.size() > 1 && got.back() == 1) got.pop_back();
  while (dims.size() > 1 && dims.back() == 1) dims.pop_back();
  if (got != dims)
    return Status::error("tensor '" + name + "' has shape " + dims_string(t->dims) + ", expected " + dims_string(dims));
  if (dims.size() == 1 && t->type != tensor::DType::F32)
    return Status::error("tensor '" + name + "' is " + tensor::dtype_name(t->type) + ", expected f32 for a norm weight");
  Weight w;
  w.type = t->type;
  w.data = t->data;
  w.n_in = dims[0];
  w.n_out = dims.size() > 1 ? dims[1] : 1;
  w.name = name;
  return w;
}
}  // namespace

Result<Weight> bind_tensor(const gguf::GgufFile& file, const std::string& name, std::vector<int64_t> dims) {
  return bind_impl(file, name, std::move(dims), false);
}

Result<Weight> bind_optional_tensor(const gguf::GgufFile& file, const std::string& name, std::vector<int64_t> dims) {
  return bind_impl(file, name, std::move(dims), true);
}

Result<int32_t> read_int_key_or(const gguf::GgufFile& file, const std::string& key, int64_t lo, int64_t hi,
                                int32_t fallback) {
  if (file.find(key) == nullptr) return fallback;
  return read_int_key(file, key, lo, hi);
}

Result<int32_t> read_int_key(const gguf::GgufFile& file, const std::string& key, int64_t lo, int64_t hi) {
  const gguf::Value* v = file.find(key);
  if (v == nullptr) return Status::error("missing metadata key '" + key + "'");
  std::optional<int64_t> i = v->as_int();
  if (!i && v->as_array() != nullptr && !v->as_array()->elements.empty()) {
    // Per-layer arrays (e.g. head_count_kv) are accepted when all entries agree.
    i = v->as_array()->elements[0].as_int();
    for (const auto& e : v->as_array()->elements)
      if (e.as_int() != i) return Status::error("metadata key '" + key + "' varies per layer, which is not supported");
  }
  if (!i) return Status::error("metadata key '" + key + "' is " + gguf::value_type_name(v->type) + ", expected an integer");
  if (*i < lo || *i > hi)
    return Status::error("metadata key '" + key + "' = " + std::to_string(*i) + " is outside [" + std::to_string(lo) +
                         ", " + std::to_string(hi) + "]");
  return static_cast<int32_t>(*i);
}

Result<float> read_float_key_or(const gguf::GgufFile& file, const std::string& key, float fallback) {
  const gguf::Value* v = file.find(key);
  if (v == nullptr) return fallback;
  std::optional<double> f = v->as_float();
  if (!f || !std::isfinite(*f))
    return Status::error("metadata key '" + key + "' is not a finite number");
  return static_cast<float>(*f);
}

}  // namespace longhaul::model
