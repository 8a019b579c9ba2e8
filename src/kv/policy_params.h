// The parameters of a KV policy as written on a command line or in a request: "name" or
// "name:key=value:key=value..." (e.g. "h2o:budget=512:recent=128", "kv-quant:bits=4", "duo:retrieval=0.25").
//
// The spec is split once; each policy then reads its own keys with the typed getters below, giving its own
// default and range, and the cell storage (bits, group, residual) is read in one place for every policy
// (read_kv_storage, kv/policy_registry.h). The reader remembers which keys were asked for, so that afterwards a
// key nobody read is refused naming the policy's parameters: full:budget=10 would otherwise look like a bounded
// cache. A value given is used as given (0 is not "the default"; leaving the key out is).
//
// A getter that refuses a value records the error and returns the default, so that a factory reads every
// parameter in one pass and fails once (status()); the first refusal is the one reported.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace longhaul::kv {

// The largest count a parameter may hold: 2^24 cells or tokens, the longest context the engine accepts.
inline constexpr int32_t kMaxParamCount = 1 << 24;

// What a getter was asked for: the key, its form and default, for --help and for the "its parameters" list.
struct ParamDoc {
  std::string key;
  std::string form;      // "N", "F" or the accepted words joined by '|'
  std::string fallback;  // the default as written (or how it is derived, e.g. "budget/2")
  std::string range;     // "[2, 16777216]", "(0, 1]", "" for words
  std::string meaning;   // one short phrase
};

class PolicyParams {
 public:
  // Splits `spec`; fails for an empty name, a part that is not key=value, or a key given twice.
  static Result<PolicyParams> parse(std::string_view spec);

  const std::string& name() const { return name_; }
  const std::string& spec() const { return spec_; }

  // An integer in [min, max]; `fallback` when the key is absent. fallback_text, when given, is how --help
  // writes the default (e.g. "budget/2" for a default derived from another parameter).
  int32_t get_int(std::string_view key, int32_t fallback, int32_t min, int32_t max, std::string_view meaning,
                  std::string_view fallback_text = {});
  // A number in [lo, hi], or (lo, hi] when lo_open.
  float get_float(std::string_view key, float fallback, float lo, float hi, bool lo_open, std::string_view meaning);
  // One of `words`.
  std::string get_word(std::string_view key, std::string_view fallback, std::initializer_list<std::string_view> words,
                       std::string_view meaning);

  // The first value a getter refused, else the first key no getter asked for (naming the spec and the keys that
  // were asked for), else ok.
  Status status() const;
  // The first value a getter refused, else ok.
  Status refusal() const;
  // The keys asked for so far, in order.
  const std::vector<ParamDoc>& asked() const { return asked_; }

 private:
  struct Entry {
    std::string key;
    std::string value;
    bool read = false;
  };
  // The entry for `key` (marked read), or null; records the key's documentation on the first ask.
  Entry* ask(std::string_view key, ParamDoc doc);
  void refuse(const Entry& e, const std::string& what);

  std::string spec_;
  std::string name_;
  std::vector<Entry> entries_;  // in the order written
  std::vector<ParamDoc> asked_;
  std::string error_;           // the first refused value ("" = none)
};

}  // namespace longhaul::kv
