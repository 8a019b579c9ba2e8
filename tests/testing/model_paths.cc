#include "testing/model_paths.h"

#include <sys/stat.h>

#include <cstdlib>

namespace longhaul::testing {

std::string models_dir() {
  if (const char* env = std::getenv("LONGHAUL_MODELS"); env != nullptr && *env != '\0') return env;
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : ".") + "/.cache/longhaul/models";
}

std::string smollm2_path() { return models_dir() + "/SmolLM2-135M-Instruct.Q4_1.gguf"; }
std::string gemma3_path() { return models_dir() + "/gemma-3-270m-q4_k_m.gguf"; }

bool file_exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace longhaul::testing
