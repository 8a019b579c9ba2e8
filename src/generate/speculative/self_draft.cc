#include "generate/speculative/self_draft.h"

#include <algorithm>

#include "generate/speculative/draft_model.h"

namespace longhaul::generate::speculative {

int32_t default_draft_skip(const std::vector<kv::SublayerRemoval>& order) {
  int32_t n = 0;
  while (n < static_cast<int32_t>(order.size()) && order[static_cast<size_t>(n)].agreement >= kDefaultDraftAgreement) ++n;
  return std::max(n, std::min<int32_t>(1, static_cast<int32_t>(order.size())));
}

Result<std::unique_ptr<DraftSource>> make_self_draft(const model::Model& target, const model::SublayerSkip& skip,
                                                     ThreadPool* pool, int32_t n_ctx, float fallback) {
  if (skip.empty()) return Status::error("--spec-type self needs at least one sub-layer to skip (--draft-skip N >= 1)");
  LH_ASSIGN_OR_RETURN(std::unique_ptr<EngineDraftModel> draft, EngineDraftModel::create(target, pool, n_ctx, skip));
  return std::unique_ptr<DraftSource>(std::make_unique<DraftModelSource>(std::move(draft), fallback, "self"));
}

}  // namespace longhaul::generate::speculative
