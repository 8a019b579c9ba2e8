// Needle in a haystack as RULER builds it (Hsieh et al., 2024, "RULER: What's the Real
// Context Size of Your Long-Context Language Models?", niah_* tasks): needle sentences
// "One of the special magic numbers for {key} is: {value}." hidden at a chosen depth of
// filler text, then a question naming the key(s); the answer must repeat every value.
// The variants differ in how many keys, values per key and asked keys there are.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "tokenizer/tokenizer.h"

namespace longhaul::eval {

enum class NiahValueKind {
  kNumber,  // 7-digit numbers (RULER type_needle_v = numbers)
  kUuid,    // version-4 UUID strings (RULER type_needle_v = uuids)
};

// One RULER NIAH configuration; the names are RULER's num_needle_k / _v / _q.
struct NiahConfig {
  int32_t n_keys = 1;     // distinct keys with needles; keys not asked for are distractors
  int32_t n_values = 1;   // needles (values) per key; all of an asked key's values must be recalled
  int32_t n_queries = 1;  // keys the question asks for, 1 <= n_queries <= n_keys
  NiahValueKind value_kind = NiahValueKind::kNumber;
};

// The configuration behind a task name: niah (one needle), niah-uuid (one needle, UUID
// value), niah-multikey (the needle plus 3 distractor keys), niah-multivalue (one key with
// 4 values), niah-multiquery (4 keys, all asked). Fails for any other name.
Result<NiahConfig> niah_config(const std::string& task_name);

struct NiahNeedle {
  std::string key;    // "adjective-noun", as RULER's word keys
  std::string value;  // 7 digits or a UUID
};

struct NiahSample {
  std::vector<NiahNeedle> needles;    // in haystack order (shuffled, as RULER does)
  std::vector<std::string> queries;   // asked keys, in question order
  std::vector<std::string> expected;  // every value of the asked keys, query by query
};

// Keys, values, needle order and asked keys drawn from `seed` alone. Uses the raw output of
// std::mt19937_64 (no distribution objects), so a seed gives the same sample everywhere.
// Keys are distinct, and so are values.
NiahSample make_niah_sample(const NiahConfig& config, uint64_t seed);

struct NiahPrompt {
  std::vector<int32_t> tokens;  // [n_tokens] the whole prompt, BOS included when the model adds one
  int32_t haystack_begin = 0;   // index of the first filler or needle token (after the instruction)
  int32_t haystack_end = 0;     // one past the haystack's last token (the question follows)
  int32_t needles_begin = 0;    // index of the first token of the first needle
  int32_t needles_end = 0;      // one past the last needle's last token (needles are adjacent)
};

// A prompt of at most n_tokens tokens (more only when the fixed parts alone are longer):
// the instruction, round(depth * n_filler) filler units, the needles, the other filler
// units, the question and the answer prefix. Pieces are tokenized separately and
// concatenated, so the needles sit at known indices.
NiahPrompt build_niah_prompt(const tokenizer::Tokenizer& tok, int32_t n_tokens, double depth, const NiahConfig& config,
                             const NiahSample& sample);

// RULER's string_match_all: the fraction of `expected` that occurs in `answer`, ignoring
// case (1 when expected is empty).
double niah_score(const std::string& answer, std::span<const std::string> expected);

// Greedy tokens allowed for the answer: enough for every expected value with separators.
int32_t niah_answer_tokens(const NiahConfig& config);

}  // namespace longhaul::eval
