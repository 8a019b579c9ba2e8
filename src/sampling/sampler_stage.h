// SamplerStage: one step of a sampler chain (penalise, filter, scale, or pick a token).
//
// A chain runs apply() of every stage in order on the same TokenCandidates; the last stage
// picks a token by setting `selected`. Adding a new kind of sampling is one new class that
// derives from SamplerStage; SamplerChain needs no change to run it.
//
// Thread-safety: a stage is not thread-safe. Each sequence being generated owns its own chain;
// use clone() to give another thread or sequence a copy.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "sampling/token_candidates.h"

namespace longhaul::sampling {

class SamplerStage {
 public:
  virtual ~SamplerStage() = default;

  // Short stable identifier, e.g. "top-k". Used in logs and describe().
  virtual std::string name() const = 0;

  // The name with the stage's parameters, e.g. "top-k(k=40)". Printed by the CLI in verbose mode.
  virtual std::string describe() const { return name(); }

  // Narrows or rescores `candidates` for the current step. A stage may reorder, drop (keeping
  // at least one), rescore entries or set `selected`, and must keep the n_sorted invariant of
  // TokenCandidates true. apply() is the only call that advances a random number generator;
  // it never records history (that is accept()'s job), so applying twice to the same logits
  // without accept() sees the same history.
  virtual void apply(TokenCandidates& candidates) = 0;

  // True when apply() would leave any candidates exactly as they are at this point of the history (a stage switched
  // off, penalties with nothing in their window): the chain may skip it.
  virtual bool changes_nothing() const { return false; }

  // True for a picking stage whose apply() selects the best candidate by TokenCandidates::better and does nothing
  // else (greedy): a chain whose other stages change nothing can take the argmax of the raw logits.
  virtual bool picks_best() const { return false; }

  // Records that `token` became part of the sequence: the chain's own pick, a prompt token, or
  // a token forced by speculative decoding. The only call that changes a stage's history.
  virtual void accept(int32_t /*token*/) {}

  // Returns the stage to its just-constructed state: history cleared, RNG rewound to its seed.
  virtual void reset() {}

  // A deep copy including the current state (history, RNG position), so the copy continues
  // exactly where the original is.
  virtual std::unique_ptr<SamplerStage> clone() const = 0;
};

}  // namespace longhaul::sampling
