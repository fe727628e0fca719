#include "optim/adamw.h"

namespace kbit {
namespace {

OptimConfig named(OptimConfig c, bool decoupled) {
  c.name = decoupled ? "adamw" : "adam";
  return c;
}

}  // namespace

AdamW::AdamW(std::vector<NamedTensor> params, OptimConfig config,
             bool decoupled)
    : RuleOptimizer(std::move(params), named(std::move(config), decoupled)) {}

}  // namespace kbit
