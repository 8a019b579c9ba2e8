// How many draft tokens a decode step should verify. A longer draft yields more tokens when its guesses are right
// and costs step time whether they are or not, and both sides change: acceptance with the text (prompt lookup
// guesses well while the model quotes, badly after), the step's cost with the model, the context depth and the
// other sequences that share the step. A fixed --draft-max is right for one workload at best (measured in
// docs/benchmarks.md: 4 beats 16 on 2 cores where acceptance is low, 16 beats 4 where the model copies long spans).
//
// Leviathan et al. (2023, "Fast Inference from Transformers via Speculative Decoding", section 3.5) choose the draft
// length γ that maximises expected tokens per unit of time, E[tokens | γ] / cost(γ), from an acceptance rate α and
// a cost ratio c. This does the same per step with both measured while decoding:
// - DraftAcceptance: for each draft node index i (a chain's position, a tree's i-th node in the source's
//   best-first order), the decayed share of the steps that proposed node i in which the target accepted it, p_i.
//   A draft of k nodes then yields 1 + sum_{i<k} p_i tokens on average (expected accepted tokens are the sum over
//   nodes of the chance that the node is accepted, for a chain and for a tree alike).
// - StepCostModel: step time against tokens per step, T(n) = a + b·n, fitted by decayed least squares over the
//   generation loop's steps (on 2 cores a 16-token step costs about 4 one-token steps on SmolLM2 and 2.4 on
//   Gemma 3: measured with `longhaul bench -p 1,2,4,8,16 -n 0 -d 512`).
// choose_draft_length() then takes the k in [0, n_max] with the most tokens per second for the whole step, where
// the step also carries other sequences' tokens: (outputs of the others + 1 + sum_{i<k} p_i) / T(others + 1 + k).
// A busy batch thus drafts only its surest guesses, a lone sequence drafts deeper.
//
// DraftAcceptanceByClass keeps one DraftAcceptance per evidence class of a source's drafts (Draft::evidence: how
// long a match a lookup source's draft continues), and one pooled over the classes above 0 that serves them as
// their prior, so that quoting and chance repeats are sized apart.
//
// A node with few recent observations leans on a prior: the estimate of its parent (in a chain, the node before
// it) times α, the decayed share of proposed nodes accepted where their parent was (Leviathan et al.'s acceptance
// rate, measured). So the
// draft grows quickly while the source copies long spans (α near 1) and only by a node or so where it guesses
// single tokens, and a source that stopped guessing well is probed again, with a short draft, once its estimates
// have aged for a few dozen steps. Where the step cost says no draft is worth it even then, a one-node draft is
// still verified after kProbeInterval steps without one (and on the first step), so acceptance is never left
// unmeasured.
//
// Thread-safety: none; each object belongs to the thread that drives its generation loop.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "generate/speculative/draft_source.h"

namespace longhaul::generate::speculative {

class StepCostModel {
 public:
  // Steps larger than this do not enter the fit: long prefill chunks cost more per token in attention than the
  // decode steps whose drafts are being sized.
  static constexpr int32_t kMaxFitTokens = 128;
  // Weight of a step relative to the one after it: the fit follows about the last 1 / (1 - kDecay) = 50 steps.
  static constexpr double kDecay = 0.98;
  // b / a before the steps have varied in size enough to fit a slope: a 16-token step then costs 3 one-token
  // steps, between the two models measured above.
  static constexpr double kPriorSlope = 0.15;

  // A step of n_tokens tokens took `seconds`.
  void add(int32_t n_tokens, double seconds);
  // Predicted seconds of a step of n_tokens (> 0), in units of a one-token step before the first add().
  double seconds(int32_t n_tokens) const;
  double intercept() const;  // a
  double slope() const;      // b
  void fit(double& a, double& b) const;  // both at once

 private:
  double w_ = 0.0, wn_ = 0.0, wnn_ = 0.0, wt_ = 0.0, wnt_ = 0.0;  // decayed sums of 1, n, n², t, n·t
};

class DraftAcceptance {
 public:
  // α's prior, with the weight of kPriorWeight observations; node i's prior is α p_parent(i) (1 for a root) with
  // the same weight.
  static constexpr double kPriorAlpha = 0.5;
  static constexpr double kPriorWeight = 1.0;
  // Each step's weight against the next one's: estimates follow about the last 1 / (1 - kDecay) = 10 steps.
  static constexpr double kDecay = 0.9;
  // Decode steps without a draft after which one node is drafted whatever the estimates say.
  static constexpr int32_t kProbeInterval = 8;

  explicit DraftAcceptance(int32_t max_nodes);

  // A decode step proposed n_drafted nodes (0: it decoded one token with no draft) with `parents` (Draft::parents:
  // [n_drafted], or empty for a chain), and the target accepted the draft nodes `accepted` (indices in
  // [0, n_drafted)).
  void observe(int32_t n_drafted, std::span<const int32_t> parents, std::span<const int32_t> accepted);
  // p_0 .. p_{n-1}, the estimated chances that each node is accepted when proposed, into out [n] (n <= max_nodes),
  // for a draft whose nodes have `parents` (Draft::parents; node i >= parents.size() follows node i - 1).
  // `prior`, when given, replaces the fixed prior: a root takes the prior's estimate, any other node its parent's
  // estimate here times the prior's chance of the node given its parent. The generation loop gives each evidence
  // class above 0 (Draft::evidence) the estimates pooled over those classes as its prior, so that a class seen for
  // the first time starts from what the source's drafts did so far rather than from kPriorAlpha.
  void estimates(std::span<double> out, std::span<const int32_t> parents = {},
                 const DraftAcceptance* prior = nullptr) const;
  double p(int32_t node) const;  // one of them (0 past max_nodes)
  double alpha() const;          // α
  int32_t max_nodes() const { return static_cast<int32_t>(hits_.size()); }
  // No draft was verified in the last kProbeInterval steps (or ever).
  bool due_for_probe() const { return steps_without_draft_ >= kProbeInterval; }

 private:
  int32_t steps_without_draft_ = kProbeInterval;
  std::vector<double> hits_;    // [max_nodes] decayed count of steps in which node i was accepted
  std::vector<double> trials_;  // [max_nodes] decayed count of steps in which node i was proposed
  double child_hits_ = 0.0;     // decayed count of accepted nodes whose parent was accepted (or was the root)
  double child_trials_ = 0.0;   // decayed count of proposed nodes whose parent was accepted (or was the root)
  std::vector<uint8_t> accepted_;  // [max_nodes] scratch of observe()
};

// A request's acceptance record as the generation loop keeps it: a DraftAcceptance per evidence class
// (Draft::evidence), and one of every draft of a class above 0 that serves those classes as their prior.
class DraftAcceptanceByClass {
 public:
  explicit DraftAcceptanceByClass(int32_t max_nodes);

  // The estimates of drafts of class `evidence` (clamped into [0, kDraftEvidenceClasses)).
  const DraftAcceptance& of(int32_t evidence) const;
  // Their prior for DraftAcceptance::estimates and choose_draft_length: the pooled estimates for a class above 0
  // (a source's own signal), none (the fixed prior) for class 0 (a source without one).
  const DraftAcceptance* prior_of(int32_t evidence) const;
  // A draft of class `evidence` was verified (DraftAcceptance::observe's arguments): its class learns it, and the
  // pooled estimates too for a class above 0.
  void observe(int32_t evidence, int32_t n_drafted, std::span<const int32_t> parents,
               std::span<const int32_t> accepted);

 private:
  static size_t index(int32_t evidence);
  std::vector<DraftAcceptance> by_class_;  // [kDraftEvidenceClasses + 1]: the classes, then the pooled estimates
};

// The draft length in [0, n_max] that maximises the step's expected generated tokens per second: the step carries
// n_other_tokens tokens of other sequences, which yield n_other_outputs generated tokens, plus this sequence's
// pending token and k draft nodes, and drafting costs draft_token_seconds per node before the step (about 0 for
// the table and lookup sources; a forward step of the draft model for draft and self). Ties go to the shorter
// draft; 0 becomes 1 when acceptance.due_for_probe(). `parents`: the draft's shape when it is known (a cheap
// source proposes first and its draft is then cut to the length chosen), empty for a chain or an unknown shape.
// `scratch` holds the estimates (reused). `prior`: DraftAcceptance::estimates'.
int32_t choose_draft_length(const DraftAcceptance& acceptance, const StepCostModel& cost, int32_t n_max,
                            int32_t n_other_tokens, int32_t n_other_outputs, double draft_token_seconds,
                            std::span<const int32_t> parents, std::vector<double>& scratch,
                            const DraftAcceptance* prior = nullptr);

}  // namespace longhaul::generate::speculative
