#include "generate/speculative/registry.h"

#include <functional>

#include "generate/speculative/aded.h"
#include "generate/speculative/ngram.h"
#include "generate/speculative/recycle.h"

namespace longhaul::generate::speculative {

namespace {

struct Entry {
  const char* name;
  std::function<std::unique_ptr<DraftSource>(int32_t n_vocab)> make;
};

// One line per source.
const std::vector<Entry>& registry() {
  static const std::vector<Entry> entries = {
      {"ngram", [](int32_t) { return std::make_unique<NgramSource>(); }},
      {"recycle", [](int32_t n_vocab) { return std::make_unique<RecycleSource>(n_vocab); }},
      {"aded", [](int32_t n_vocab) { return std::make_unique<AdedSource>(n_vocab); }},
  };
  return entries;
}

}  // namespace

std::vector<std::string> draft_source_names() {
  std::vector<std::string> names = {"none"};
  for (const Entry& e : registry()) names.emplace_back(e.name);
  return names;
}

Status validate(const SpeculativeOptions& o) {
  bool known = false;
  std::string list;
  for (const std::string& n : draft_source_names()) {
    known = known || n == o.type;
    list += (list.empty() ? "" : ", ") + n;
  }
  if (!known) return Status::error("unknown draft source '" + o.type + "' (known: " + list + ")");
  if (o.draft_max < 1 || o.draft_max > 256)
    return Status::error("--draft-max " + std::to_string(o.draft_max) + " is outside [1, 256]");
  if (o.draft_min < 0 || o.draft_min > o.draft_max)
    return Status::error("--draft-min " + std::to_string(o.draft_min) + " is outside [0, --draft-max " +
                         std::to_string(o.draft_max) + "]");
  return Status::ok();
}

Result<std::unique_ptr<DraftSource>> make_draft_source(const SpeculativeOptions& options, int32_t n_vocab) {
  LH_RETURN_IF_ERROR(validate(options));
  for (const Entry& e : registry())
    if (options.type == e.name) return e.make(n_vocab);
  return std::unique_ptr<DraftSource>();  // "none"
}

}  // namespace longhaul::generate::speculative
