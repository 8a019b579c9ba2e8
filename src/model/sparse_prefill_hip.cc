// HiP's hierarchical top-k over key blocks for sparse prefill: see sparse_prefill_hip.h.
#include "model/sparse_prefill_hip.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "base/status.h"
#include "kernels/ops.h"
#include "kv/policies/hip.h"

namespace longhaul::model {

void build_hip(const HeadQueriesKeys& h, int32_t budget, HeadSparseKeys& out) {
  constexpr int32_t kB = HeadSparseKeys::kBlock;
  LH_CHECK(budget >= kHipMinBudget);
  out.reset_blocks(h, SparsePattern::kHip);
  const int32_t n_select = budget / kB - kHipSinkBlocks - kHipLocalBlocks;
  const int32_t dk = h.dk;
  std::vector<int32_t> cells;  // [n_candidates] keys of each candidate block: all whole blocks
  float dots[kHipRepresentativeKeys];
  for (int32_t qb = out.first_qblock; qb < out.first_qblock + out.n_qblocks; ++qb) {
    const std::pair<int32_t, int32_t> queries = HeadSparseKeys::block_queries(h, qb);
    for (int32_t kb = 0; kb < std::min(kHipSinkBlocks, qb + 1); ++kb) out.select_block(qb, kb);
    for (int32_t kb = std::max(0, qb - kHipLocalBlocks + 1); kb <= qb; ++kb) out.select_block(qb, kb);
    // Candidates: the key blocks between the sinks and the local blocks, all before the query block, so every
    // query of the block sees each of their keys.
    const int32_t first = kHipSinkBlocks, end = qb - kHipLocalBlocks + 1;
    if (end - first <= 0) continue;
    if (end - first <= n_select) {
      for (int32_t kb = first; kb < end; ++kb) out.select_block(qb, kb);
      continue;
    }
    cells.assign(static_cast<size_t>(end - first), kB);
    // A half's score: its representative keys (from the centre cell on) against every query of the block, the
    // largest dot product. The centre cell of a half of whole blocks is at least 32 keys before its end, so the
    // representative's keys lie inside the half.
    auto score_cell = [&](int32_t candidate, int32_t cell) {
      const int64_t pos = static_cast<int64_t>(first + candidate) * kB + cell;
      float best = -std::numeric_limits<float>::infinity();
      for (int32_t i = queries.first; i < queries.second; ++i) {
        kernels::dot_f16_rows(h.q + static_cast<int64_t>(i) * dk, h.k + pos * dk, dk, kHipRepresentativeKeys, dk,
                              dots);
        for (float d : dots) best = std::max(best, d);
      }
      return best;
    };
    for (const kv::HipBranch& b : kv::hip_tree_search(cells, n_select, score_cell))
      out.select_block(qb, first + b.first);
  }
}

}  // namespace longhaul::model
