// MoA's run-time side (Fu et al., 2024, "MoA: Mixture of Sparse Attention for Automatic Large Language Model
// Compression"): each head attends to the attention sinks and a local band whose width follows the head's own
// elastic rule, span = alpha + beta * N at input length N, as calibration chose it (eval/prefill_calibration.h).
// MoA's kernel masks by token; ours computes whole 64-key blocks, so the band is ceil(span / 64) key blocks up to
// and including the query's own, and the sinks are the first key block (MoA keeps 64 initial tokens too).
// Calibration measures each candidate span with these same blocks, so the recall it stores is what runs.
#include "model/sparse_prefill.h"

#include <algorithm>
#include <cmath>

namespace longhaul::model {

int32_t moa_span(const kv::HeadPrefill& assigned, int32_t n_keys) {
  const double span = static_cast<double>(assigned.moa_alpha) + static_cast<double>(assigned.moa_beta) * n_keys;
  return static_cast<int32_t>(std::clamp(std::ceil(span), 1.0, static_cast<double>(std::max(1, n_keys))));
}

void build_moa(const HeadQueriesKeys& h, const kv::HeadPrefill& assigned, HeadSparseKeys& out) {
  constexpr int32_t kB = HeadSparseKeys::kBlock;
  build_a_shape(h, 1, (moa_span(assigned, h.n_k) + kB - 1) / kB, out);
  out.recall = assigned.recall;
}

}  // namespace longhaul::model
