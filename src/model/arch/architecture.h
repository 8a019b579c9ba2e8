// What an architecture file in model/arch/ provides. Adding an architecture is one
// new file defining an Architecture plus one line in registry.cc.
#pragma once

#include <string_view>

#include "base/status.h"
#include "gguf/gguf_file.h"
#include "model/attention.h"
#include "model/blocks.h"
#include "model/config.h"
#include "model/weights.h"

namespace longhaul::model {

class Architecture {
 public:
  virtual ~Architecture() = default;
  // general.architecture value this class handles.
  virtual std::string_view name() const = 0;
  // Reads hyper-parameters from `<arch>.*` keys; errors name the missing or bad key.
  virtual Result<ModelConfig> read_config(const gguf::GgufFile& file) const = 0;
  // Binds tensors by name; errors name the missing tensor or the shape found and expected.
  virtual Status bind_weights(const gguf::GgufFile& file, const ModelConfig& config, ModelWeights& weights) const = 0;
  // The two residual branches of layer il over the step's tokens (model/sublayers.h), each reading step.x and
  // adding its output to it: the attention branch (norms, self-attention, W_o), then the FFN branch. Model::forward
  // calls each unless the pass skips it.
  virtual void attention_sublayer(StepContext& step, int32_t il) const = 0;
  virtual void feed_forward_sublayer(StepContext& step, int32_t il) const = 0;
};

// The architecture registered under `name`, or null.
const Architecture* find_architecture(std::string_view name);
// Names of all registered architectures, for error messages.
std::string supported_architectures();

}  // namespace longhaul::model
