#include "model/sublayers.h"

#include <algorithm>

#include "base/status.h"

namespace longhaul::model {

SublayerSkip SublayerSkip::first_of(const std::vector<kv::SublayerRemoval>& order, int32_t n, int32_t n_layer) {
  LH_CHECK(n >= 0 && n <= static_cast<int32_t>(order.size()));
  SublayerSkip s(n_layer);
  for (int32_t i = 0; i < n; ++i) s.skip(order[static_cast<size_t>(i)].sublayer);
  return s;
}

void SublayerSkip::skip(const kv::Sublayer& s) {
  const size_t i = static_cast<size_t>(s.layer) * 2 + static_cast<size_t>(s.kind);
  LH_CHECK_MSG(s.layer >= 0 && i < skipped_.size(), "sub-layer outside the model's layers");
  skipped_[i] = 1;
}

int32_t SublayerSkip::n_skipped() const {
  return static_cast<int32_t>(std::count(skipped_.begin(), skipped_.end(), uint8_t{1}));
}

std::string SublayerSkip::describe() const {
  std::string out;
  for (size_t i = 0; i < skipped_.size(); ++i)
    if (skipped_[i] != 0) {
      if (!out.empty()) out += ',';
      out += kv::sublayer_name({static_cast<int32_t>(i / 2), static_cast<kv::SublayerKind>(i % 2)});
    }
  return out.empty() ? "none" : out;
}

Result<SublayerSkip> calibrated_sublayer_skip(const kv::HeadProfile& profile, int32_t n, int32_t n_layer,
                                              const std::string& what) {
  const std::string file = profile.source.empty() ? "the head profile" : "the head profile '" + profile.source + "'";
  if (profile.n_layer != n_layer)
    return Status::error(what + ": " + file + " was measured on a model of " + std::to_string(profile.n_layer) +
                         " layers (" + (profile.model.empty() ? "another model" : profile.model) + "), this one has " +
                         std::to_string(n_layer));
  if (profile.sublayer_order.empty())
    return Status::error(what + ": " + file +
                         " holds no sub-layer order (run `longhaul calibrate-sublayers`, or leave out --head-profile to "
                         "compute it beside the model)");
  if (n < 0 || n > static_cast<int32_t>(profile.sublayer_order.size()))
    return Status::error(what + ": " + file + " ranks " + std::to_string(profile.sublayer_order.size()) +
                         " sub-layers; asked for " + std::to_string(n) +
                         " (rank more with `longhaul calibrate-sublayers --ranked N`)");
  return SublayerSkip::first_of(profile.sublayer_order, n, n_layer);
}

}  // namespace longhaul::model
