// libFuzzer driver for the head profile parser (kv/head_profile.h): any text must parse or fail with a Status,
// never crash, and a profile that parses must survive formatting and parsing again with the same heads, the
// same sub-layer order and the same prefill section. Seeds: tests/testdata/head_profile_corpus.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "kv/head_profile.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace longhaul::kv;
  longhaul::Result<HeadProfile> p = parse_head_profile(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!p.is_ok()) return 0;
  longhaul::Result<HeadProfile> q = parse_head_profile(format_head_profile(*p));
  if (!q.is_ok() || q->n_layer != p->n_layer || q->n_head_kv != p->n_head_kv || q->heads.size() != p->heads.size() ||
      q->sublayer_order.size() != p->sublayer_order.size() || q->prefill.size() != p->prefill.size())
    std::abort();
  for (size_t i = 0; i < p->prefill.size(); ++i)
    if (q->prefill[i].listed != p->prefill[i].listed || q->prefill[i].pattern != p->prefill[i].pattern ||
        q->prefill[i].n_columns != p->prefill[i].n_columns)
      std::abort();
  return 0;
}
