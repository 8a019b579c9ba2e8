#include "eval/task.h"

namespace longhaul::eval {
namespace {

struct Entry {
  const char* name;
  std::unique_ptr<Task> (*make)();
};

// One line per task.
constexpr Entry kTasks[] = {
    {"passkey", make_passkey_task},
    {"ppl", make_ppl_task},
    {"niah", make_niah_task},
    {"niah-uuid", make_niah_uuid_task},
    {"niah-multikey", make_niah_multikey_task},
    {"niah-multivalue", make_niah_multivalue_task},
    {"niah-multiquery", make_niah_multiquery_task},
};

}  // namespace

Result<std::unique_ptr<Task>> make_task(const std::string& name) {
  for (const Entry& e : kTasks)
    if (name == e.name) return e.make();
  std::string known;
  for (const Entry& e : kTasks) known += (known.empty() ? "" : ", ") + std::string(e.name);
  return Status::error("unknown eval task '" + name + "' (known: " + known + ")");
}

std::vector<std::string> task_names() {
  std::vector<std::string> names;
  for (const Entry& e : kTasks) names.emplace_back(e.name);
  return names;
}

}  // namespace longhaul::eval
