// libFuzzer driver for the KV policy spec reader (kv/policy_params.h), which reads command lines and batch request
// lines: any text must parse or fail with a Status, never crash, and every getter must return a value inside the
// range it was given (the value written, or the default when the value is refused).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "kv/policy_params.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace longhaul::kv;
  longhaul::Result<PolicyParams> p = PolicyParams::parse(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!p.is_ok()) return 0;
  const int32_t n = p->get_int("budget", 1024, 2, kMaxParamCount, "cells");
  const int32_t sink = p->get_int("sink", 4, 0, 1024, "tokens");
  const float f = p->get_float("forget", 0.9f, 0.0f, 1.0f, /*lo_open=*/true, "factor");
  const float r = p->get_float("retrieval", 0.25f, 0.0f, 1.0f, /*lo_open=*/false, "share");
  const std::string w = p->get_word("select", "head", {"head", "layer"}, "choice");
  if (n < 2 || n > kMaxParamCount || sink < 0 || sink > 1024 || !(f > 0.0f && f <= 1.0f) || !(r >= 0.0f && r <= 1.0f) ||
      (w != "head" && w != "layer"))
    std::abort();
  (void)p->status();
  return 0;
}
