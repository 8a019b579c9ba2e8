// Corrupted and edge-case GGUF files built with GgufWriter, each with the error it must
// produce. gguf_test replays them under the normal compiler; the fuzz build writes
// them out as the fuzzer's seed corpus (tests/fuzz/README.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gguf/gguf_writer.h"

namespace longhaul::gguf::corpus {

struct CorpusCase {
  std::string name;             // file name stem: "bad_magic"
  std::vector<uint8_t> bytes;   // the whole file
  std::string expected_error;   // substring of the parse error; empty = must parse
};

// A small valid file: 6 metadata entries (scalars, a string, an array, a nested array)
// and two tensors (q8_0 [32, 2], f32 [8]). The last tensor fills its 32-byte
// alignment exactly, so every proper prefix of the file is truncated.
std::vector<uint8_t> small_valid_file(GgufLayout* layout = nullptr);
GgufWriter small_valid_writer();

std::vector<CorpusCase> make_corpus();

// Little-endian patching helpers for tests that corrupt one field.
void put_u32(std::vector<uint8_t>& bytes, size_t offset, uint32_t v);
void put_u64(std::vector<uint8_t>& bytes, size_t offset, uint64_t v);

}  // namespace longhaul::gguf::corpus
