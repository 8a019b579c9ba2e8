// libFuzzer driver for the GGUF reader: any byte string must parse or fail with a
// Status, never crash or read outside the input. A successful parse is then walked
// (display strings, typed lookups, first and last byte of every tensor) so that
// out-of-bounds pointers in the result are caught too.
#include <cstddef>
#include <cstdint>

#include "gguf/gguf_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using longhaul::gguf::GgufFile;
  longhaul::Result<GgufFile> file = GgufFile::parse(data, size);
  if (!file.is_ok()) return 0;
  volatile size_t sink = 0;
  for (const auto& entry : file->metadata()) {
    sink = sink + entry.value.to_display_string().size();
    (void)file->get_string_array(entry.key);
    (void)file->get_float_array(entry.key);
    (void)file->get_int_array(entry.key);
  }
  for (const auto& t : file->tensors()) {
    if (t.size_bytes > 0) sink = sink + t.data[0] + t.data[t.size_bytes - 1];
    sink = sink + static_cast<size_t>(t.n_rows());
  }
  return 0;
}
