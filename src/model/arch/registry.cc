// The one list of architectures. Adding one: a file in arch/ and a line here.
#include "model/arch/architecture.h"

namespace longhaul::model {

const Architecture& llama_architecture();
const Architecture& gemma3_architecture();

namespace {
const Architecture* const kArchitectures[] = {
    &llama_architecture(),
    &gemma3_architecture(),
};
}  // namespace

const Architecture* find_architecture(std::string_view name) {
  for (const Architecture* a : kArchitectures)
    if (a->name() == name) return a;
  return nullptr;
}

std::string supported_architectures() {
  std::string s;
  for (const Architecture* a : kArchitectures) s += (s.empty() ? "" : ", ") + std::string(a->name());
  return s;
}

}  // namespace longhaul::model
