// A DraftModel over a fixed table — the logits after a text depend only on its last token — that records what it
// was asked: the tests' stand-in for a small model, so that the draft source's own logic (greedy drafting, BiLD's
// fallback, the rollback at sync) runs on crafted streams and inside the chi-square test without a model file.
#pragma once

#include <map>
#include <utility>
#include <vector>

#include "generate/speculative/draft_model.h"

namespace longhaul::generate::speculative::testing {

class TableDraftModel final : public DraftModel {
 public:
  // table: [n_vocab][n_vocab] logits after each token.
  explicit TableDraftModel(std::vector<std::vector<float>> table) : table_(std::move(table)) {}

  int32_t n_vocab() const override { return static_cast<int32_t>(table_.size()); }
  Result<const float*> sync(uint64_t request, std::span<const int32_t> tokens) override {
    std::vector<int32_t>& held = held_[request];
    size_t keep = 0;
    while (keep < held.size() && keep < tokens.size() && held[keep] == tokens[keep]) ++keep;
    last_dropped_ = held.size() - keep;
    held.assign(tokens.begin(), tokens.end());
    return row(tokens.back());
  }
  Result<const float*> append(uint64_t request, int32_t token) override {
    held_[request].push_back(token);
    ++n_appends_;
    return row(token);
  }
  void end(uint64_t request) override { held_.erase(request); }

  const std::vector<int32_t>& held(uint64_t request) { return held_[request]; }
  size_t last_dropped() const { return last_dropped_; }  // tokens the last sync rolled back
  int64_t n_appends() const { return n_appends_; }

 private:
  const float* row(int32_t token) const { return table_[static_cast<size_t>(token)].data(); }
  std::vector<std::vector<float>> table_;
  std::map<uint64_t, std::vector<int32_t>> held_;
  size_t last_dropped_ = 0;
  int64_t n_appends_ = 0;
};

}  // namespace longhaul::generate::speculative::testing
