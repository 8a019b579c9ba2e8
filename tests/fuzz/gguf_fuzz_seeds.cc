// Writes the generated GGUF corpus (valid and corrupted files) into a folder, as the
// seed corpus for gguf_fuzz. Usage: gguf_fuzz_seeds <out_dir>
#include <cstdio>
#include <filesystem>

#include "gguf_corpus.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <out_dir>\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  int n_written = 0;
  for (const auto& c : longhaul::gguf::corpus::make_corpus()) {
    const std::string path = (dir / (c.name + ".gguf")).string();
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr || std::fwrite(c.bytes.data(), 1, c.bytes.size(), f) != c.bytes.size()) {
      std::fprintf(stderr, "cannot write %s\n", path.c_str());
      return 1;
    }
    std::fclose(f);
    ++n_written;
  }
  std::printf("wrote %d files to %s\n", n_written, dir.string().c_str());
  return 0;
}
