// Adam and AdamW: RuleOptimizer with the adam rule (optim/rule_optimizer.h).
//
// AdamW (decoupled = true) decays the weights directly, p -= lr * wd * p;
// Adam (decoupled = false) adds wd * p to the gradient (L2). Uses lr, beta1,
// beta2, eps, weight_decay and the state settings (bits 32/8/4...) from
// OptimConfig. Bias correction uses each parameter's own step count, so a
// parameter that first gets a gradient late starts its correction at 1.
#pragma once

#include "optim/rule_optimizer.h"

namespace kbit {

class AdamW : public RuleOptimizer {
 public:
  AdamW(std::vector<NamedTensor> params, OptimConfig config,
        bool decoupled = true);
  bool decoupled() const { return config().name == "adamw"; }
};

}  // namespace kbit
