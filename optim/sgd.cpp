#include "optim/sgd.h"

namespace kbit {
namespace {

OptimConfig named(OptimConfig c) {
  c.name = "sgd";
  return c;
}

}  // namespace

SGD::SGD(std::vector<NamedTensor> params, OptimConfig config)
    : RuleOptimizer(std::move(params), named(std::move(config))) {}

}  // namespace kbit
