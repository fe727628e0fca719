// MLP: Linear layers with ReLU or GELU between them and dropout after each
// hidden activation.
//
// B batch, in = in_features, out = out_features. Layer i is "fc<i>":
// fc0 (in -> hidden[0]), ..., fc<H> (hidden[H-1] -> out), all with bias.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/philox.h"
#include "models/linear.h"

namespace kbit {

struct MLPConfig {
  int64_t in_features = 784;
  std::vector<int64_t> hidden = {1024, 1024};
  int64_t out_features = 10;
  std::string activation = "relu";  // relu | gelu
  double dropout = 0.0;             // after each hidden activation
};

class MLP : public Module {
 public:
  // Params "fc0.weight", "fc0.bias", ... Throws UserError for a bad config
  // (widths < 1, unknown activation, dropout outside [0, 1)).
  MLP(const MLPConfig& config, Philox& rng, DType dtype = DType::f32);
  // x (B, in_features) -> logits (B, out_features). Dropout draws from rng
  // when training() is true.
  Tensor forward(const Tensor& x, Philox& rng) const;
  const MLPConfig& config() const { return config_; }

 private:
  MLPConfig config_;
  std::vector<std::shared_ptr<Linear>> layers_;
};

}  // namespace kbit
