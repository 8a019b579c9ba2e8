// actqkv (ActQKV, Xiao et al., 2025): query-aware page selection with an activation-aware probe query and a
// dynamic cut-off. See actqkv.cc. The rules are exported for the tests, which check them against the formulas
// written out independently.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace longhaul::kv {

// ActQKV's Activation Bias of each token of a window: how far the token's query activation lies from the window's
// typical activation, per channel in units of the channel's spread, averaged over the channels:
//   phi_j = (1 / d) sum_c (x_jc - mean_c)^2 / (var_c + eps),   eps = (1 / d) sum_c var_c / 100,
// with mean_c and var_c (population) over the window's n tokens. eps keeps a channel that hardly moves from
// dominating (the authors' floor: a hundredth of the mean variance).
//   x:   [n, d] the window's query activations, one row per token (the GQA group's heads side by side)
//   phi: [n] out
void activation_bias(std::span<const float> x, int32_t n, int32_t d, std::vector<float>& phi);

// The probe query of a window: its tokens' queries weighted by their share of the Activation Bias,
//   w_j = phi_j / sum_i phi_i   (1 / n each when no token deviates: sum phi = 0),   probe = sum_j w_j x_j.
//   weights: [n] out;  probe: [d] out
void probe_query(std::span<const float> x, int32_t n, int32_t d, std::vector<float>& weights,
                 std::vector<float>& probe);

// The information density of a layer's page scores, as ActQKV measures it: the entropy of their softmax,
// normalized by its largest value,
//   p_i = exp(s_i) / sum_k exp(s_k),   D = -sum_i p_i ln p_i / ln N   in [0, 1]   (N = scores; D = 1 for N < 2).
// D near 1: the scores are spread, the attention will be too; near 0: a few pages hold it.
float information_density(std::span<const float> scores);

// The dynamic cut-off: pages read out of the N candidates scored, given the maximum n_max and the minimum n_min,
//   n = clamp(ceil(D * n_max), n_min, n_max), and never more than N.
int32_t dynamic_cutoff(std::span<const float> scores, int32_t n_min, int32_t n_max);

}  // namespace longhaul::kv
