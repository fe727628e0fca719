#include "models/mlp.h"

#include "autograd/ops.h"

namespace kbit {
namespace {

void check_config(const MLPConfig& c) {
  KBIT_USER_CHECK(c.in_features >= 1 && c.out_features >= 1,
                  "[mlp] expected in and out features >= 1, got ",
                  c.in_features, " and ", c.out_features);
  for (int64_t h : c.hidden) {
    KBIT_USER_CHECK(h >= 1, "[mlp] expected hidden widths >= 1, got ", h);
  }
  KBIT_USER_CHECK(c.activation == "relu" || c.activation == "gelu",
                  "[mlp] expected activation relu or gelu, got '", c.activation,
                  "'");
  KBIT_USER_CHECK(c.dropout >= 0 && c.dropout < 1,
                  "[mlp] expected dropout in [0, 1), got ", c.dropout);
}

}  // namespace

MLP::MLP(const MLPConfig& config, Philox& rng, DType dtype) : config_(config) {
  check_config(config_);
  std::vector<int64_t> widths = {config_.in_features};
  widths.insert(widths.end(), config_.hidden.begin(), config_.hidden.end());
  widths.push_back(config_.out_features);
  for (size_t i = 0; i + 1 < widths.size(); ++i) {
    layers_.push_back(register_module(
        "fc" + std::to_string(i),
        std::make_shared<Linear>(widths[i], widths[i + 1], true, rng, dtype)));
  }
}

Tensor MLP::forward(const Tensor& x, Philox& rng) const {
  KBIT_CHECK(x.dim() == 2 && x.shape(1) == config_.in_features,
             "[mlp] expected input (B, ", config_.in_features, "), got ",
             shape_str(x.shape()));
  Tensor h = x;  // (B, width of the current layer)
  for (size_t i = 0; i < layers_.size(); ++i) {
    h = layers_[i]->forward(h);
    if (i + 1 == layers_.size()) break;  // logits: no activation
    h = config_.activation == "gelu" ? gelu(h) : relu(h);
    if (config_.dropout > 0) h = dropout(h, config_.dropout, training(), rng);
  }
  return h;
}

}  // namespace kbit
