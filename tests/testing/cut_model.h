// A model file cut to its first layers, optionally with some tensors' bytes edited, written to a temporary GGUF
// file and loaded (the file is removed with the object): small real-weight models for tests that need a layer
// count of their own or a crafted tensor (a zeroed projection). Header-only: the test binaries that use it link
// the model library; longhaul_testing does not.
#pragma once

#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gguf/gguf_file.h"
#include "gguf/gguf_writer.h"
#include "model/model.h"

namespace longhaul::testing {

class CutModel {
 public:
  // Tensor edit: called with each kept tensor's name and bytes, which it may change in place.
  using EditFn = std::function<void(const std::string& name, std::vector<uint8_t>& bytes)>;

  CutModel(const std::string& source, int32_t n_layers, const EditFn& edit = nullptr) {
    Result<gguf::GgufFile> file = gguf::GgufFile::open(source);
    if (!file.is_ok()) return;
    const std::string arch = file->get_string("general.architecture").value_or("");
    gguf::GgufWriter writer;
    for (const gguf::MetadataEntry& e : file->metadata())
      writer.add(e.key, e.key == arch + ".block_count" ? gguf::make_u32(static_cast<uint32_t>(n_layers)) : e.value);
    for (const gguf::TensorInfo& t : file->tensors()) {
      if (t.name.starts_with("blk.") && std::stoi(t.name.substr(4)) >= n_layers) continue;
      std::vector<uint8_t> bytes(t.data, t.data + t.size_bytes);
      if (edit) edit(t.name, bytes);
      writer.add_tensor(t.name, t.dims, t.type, std::move(bytes));
    }
    static int n_made = 0;
    path_ = (std::filesystem::temp_directory_path() /
             ("longhaul_cut_" + std::to_string(getpid()) + "_" + std::to_string(n_made++) + ".gguf"))
                .string();
    const Status st = writer.write_file(path_);
    EXPECT_TRUE(st.is_ok()) << st.message();
    Result<std::unique_ptr<model::Model>> loaded = model::Model::load(path_);
    EXPECT_TRUE(loaded.is_ok()) << loaded.message();
    if (loaded.is_ok()) model_ = std::move(loaded).value();
  }
  ~CutModel() {
    model_.reset();
    if (!path_.empty()) std::filesystem::remove(path_);
  }
  CutModel(const CutModel&) = delete;
  CutModel& operator=(const CutModel&) = delete;

  const model::Model* get() const { return model_.get(); }

 private:
  std::string path_;
  std::unique_ptr<model::Model> model_;
};

}  // namespace longhaul::testing
