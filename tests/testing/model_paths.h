// Where tests find the default models: $LONGHAUL_MODELS or ~/.cache/longhaul/models,
// as scripts/setup.sh installs them.
#pragma once

#include <string>

namespace longhaul::testing {

std::string models_dir();
// Full path of a default model file; the test is skipped by the caller if it is missing.
std::string smollm2_path();
std::string gemma3_path();
bool file_exists(const std::string& path);

}  // namespace longhaul::testing
