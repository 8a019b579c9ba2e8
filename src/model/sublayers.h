// Sub-layers of a decoder and the set a forward pass leaves out.
//
// Every decoder layer adds two residual branches to the stream: its attention (x += attn(norm(x))) and then its
// FFN (x += ffn(norm(x))); Gemma's post-norms sit inside the branches. Leaving a branch out passes the stream on
// unchanged, which is how FinerCut (Zhang et al., 2024, "FinerCut: Finer-grained Interpretable Layer Pruning for
// Large Language Models") prunes: each attention and each FFN is a candidate of its own. The same set drives
// self-speculative decoding (Draft & Verify, Zhang et al., 2023): the draft is the model with some sub-layers left
// out, the target the whole model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "kv/head_profile.h"

namespace longhaul::model {

// The sub-layers Model::forward skips: a property of a forward pass (an engine's), not of the model, so one loaded
// model serves a pruned and a whole pass at once. A skipped attention writes no keys and values for its layer:
// an engine whose passes always skip it never reads them either.
class SublayerSkip {
 public:
  SublayerSkip() = default;  // skips nothing, for any model
  explicit SublayerSkip(int32_t n_layer) : skipped_(static_cast<size_t>(n_layer) * 2, 0) {}
  // The first n entries of a calibrated removal order (kv::HeadProfile::sublayer_order), for a model of n_layer
  // layers; the entries' layers must lie below n_layer.
  static SublayerSkip first_of(const std::vector<kv::SublayerRemoval>& order, int32_t n, int32_t n_layer);

  void skip(const kv::Sublayer& s);
  bool skips(int32_t il, kv::SublayerKind kind) const {
    const size_t i = static_cast<size_t>(il) * 2 + static_cast<size_t>(kind);
    return i < skipped_.size() && skipped_[i] != 0;
  }
  int32_t n_skipped() const;
  bool empty() const { return n_skipped() == 0; }
  // The layers the set was made for (0 = skips nothing, any model).
  int32_t n_layer() const { return static_cast<int32_t>(skipped_.size() / 2); }
  // "attn.3,ffn.7" in layer order, "none" when empty.
  std::string describe() const;

 private:
  std::vector<uint8_t> skipped_;  // [n_layer * 2]: 2 * il + kind
};

// The first n sub-layers of `profile`'s removal order, as a set for a model of n_layer layers. Fails, naming the
// profile's file and the flag that asked (`what`, e.g. "--prune-sublayers 8"), when the profile holds no sub-layer
// order, ranks fewer than n, or was measured on a model of another depth.
Result<SublayerSkip> calibrated_sublayer_skip(const kv::HeadProfile& profile, int32_t n, int32_t n_layer,
                                              const std::string& what);

}  // namespace longhaul::model
