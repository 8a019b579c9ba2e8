// longhaul inspect: what a GGUF file holds, as a person wants to read it.
#include <cstdio>
#include <map>
#include <memory>

#include "commands.h"
#include "common.h"
#include "kernels/quant.h"

namespace longhaul::cli {
namespace {

struct InspectFlags {
  ModelFlags model;
  bool metadata = false;
  bool tensors = true;
};

std::string human_bytes(int64_t b) {
  char buf[32];
  if (b >= (1 << 20)) {
    std::snprintf(buf, sizeof(buf), "%.2f MiB", static_cast<double>(b) / (1 << 20));
  } else if (b >= 1024) {
    std::snprintf(buf, sizeof(buf), "%.1f KiB", static_cast<double>(b) / 1024);
  } else {
    std::snprintf(buf, sizeof(buf), "%lld B", static_cast<long long>(b));
  }
  return buf;
}

int run(const InspectFlags& f) {
  Result<LoadedModel> loaded = load_model(f.model.model);
  if (!loaded) return report_error(loaded.message());
  const model::ModelConfig& c = loaded->model->config();
  const gguf::GgufFile& file = loaded->model->file();
  const tokenizer::Tokenizer& tok = *loaded->tokenizer;

  std::printf("file:          %s (GGUF v%u, %s, %zu tensors, %zu metadata keys)\n", file.path().c_str(),
              file.version(), human_bytes(static_cast<int64_t>(file.file_size_bytes())).c_str(),
              file.tensors().size(), file.metadata().size());
  std::printf("model:         %s\n", c.name.c_str());
  std::printf("architecture:  %s\n", c.arch.c_str());
  std::printf("layers:        %d\n", c.n_layer);
  std::printf("embedding:     %d\n", c.n_embd);
  std::printf("heads:         %d query, %d key/value (head dim %d/%d, rope dims %d, %s)\n", c.n_head, c.n_head_kv,
              c.head_dim_k, c.head_dim_v, c.n_rot, c.rope_style == kernels::RopeStyle::kNeox ? "neox" : "normal");
  std::printf("feed-forward:  %d (%s)\n", c.n_ff, c.activation == model::FfnActivation::kGelu ? "GeGLU" : "SwiGLU");
  std::printf("context:       %d tokens trained\n", c.n_ctx_train);
  std::printf("rope base:     %g", c.rope_freq_base);
  if (c.sliding_window > 0) std::printf(" (local layers %g)", c.rope_freq_base_local);
  std::printf("\n");
  if (c.sliding_window > 0) {
    int n_local = 0;
    for (int32_t il = 0; il < c.n_layer; ++il) n_local += c.is_local(il) ? 1 : 0;
    std::printf("local layers:  %d of %d, window %d tokens\n", n_local, c.n_layer, c.sliding_window);
  }
  std::printf("rms eps:       %g\n", c.rms_eps);
  std::printf("output:        %s\n", c.tied_output ? "tied to token_embd" : "output.weight");
  std::printf("tokenizer:     %s (pre '%s'), %d tokens, bos %d, eos %d, add bos %s, chat format %s\n",
              tok.model_name().c_str(), tok.pre_name().c_str(), tok.n_vocab(), tok.bos_id(), tok.eos_id(),
              tok.add_bos() ? "yes" : "no",
              tokenizer::detect_chat_format(file) == tokenizer::ChatFormat::kGemma ? "gemma" : "chatml");
  const int64_t kv_per_token = static_cast<int64_t>(c.n_layer) * c.n_head_kv * (c.head_dim_k + c.head_dim_v) * 2;
  std::printf("KV cache:      %s per token (f16)\n", human_bytes(kv_per_token).c_str());
  std::printf("weights read per token: %s; kernels ISA: %s\n",
              human_bytes(loaded->model->weight_bytes_per_token()).c_str(), kernels::isa_name(kernels::active_isa()));

  if (f.metadata) {
    std::printf("\nmetadata:\n");
    for (const auto& e : file.metadata())
      std::printf("  %-44s %-8s %s\n", e.key.c_str(), gguf::value_type_name(e.value.type),
                  e.value.to_display_string(8).c_str());
  }
  if (f.tensors) {
    std::printf("\n%-36s %-6s %-22s %12s\n", "tensor", "type", "shape", "size");
    std::map<std::string, std::pair<int, int64_t>> by_type;
    int64_t total = 0;
    for (const auto& t : file.tensors()) {
      std::string shape = "[";
      for (size_t i = 0; i < t.dims.size(); ++i) shape += (i ? ", " : "") + std::to_string(t.dims[i]);
      shape += "]";
      std::printf("%-36s %-6s %-22s %12s\n", t.name.c_str(), tensor::dtype_name(t.type), shape.c_str(),
                  human_bytes(t.size_bytes).c_str());
      auto& entry = by_type[tensor::dtype_name(t.type)];
      entry.first += 1;
      entry.second += t.size_bytes;
      total += t.size_bytes;
    }
    std::printf("\n%-8s %8s %14s\n", "type", "tensors", "bytes");
    for (const auto& [name, entry] : by_type)
      std::printf("%-8s %8d %14s\n", name.c_str(), entry.first, human_bytes(entry.second).c_str());
    std::printf("%-8s %8zu %14s\n", "total", file.tensors().size(), human_bytes(total).c_str());
  }
  return 0;
}

}  // namespace

Runner add_inspect_command(CLI::App& app) {
  auto flags = std::make_shared<InspectFlags>();
  CLI::App* cmd = app.add_subcommand("inspect", "Print architecture, hyper-parameters, tokenizer and tensors of a model");
  add_model_flags(*cmd, flags->model);
  cmd->add_flag("--metadata", flags->metadata, "also list every metadata key");
  cmd->add_flag("!--no-tensors", flags->tensors, "omit the tensor table");
  return [flags]() { return run(*flags); };
}

}  // namespace longhaul::cli
