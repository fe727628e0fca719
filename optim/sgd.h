// SGD with momentum (and Nesterov momentum): RuleOptimizer with the
// momentum / nesterov rule (optim/rule_optimizer.h).
//
// Uses lr, momentum, nesterov, weight_decay (L2, added to the gradient) and
// the state settings from OptimConfig. With momentum 0 no state is
// allocated (plain SGD, cpu::sgd_update).
#pragma once

#include "optim/rule_optimizer.h"

namespace kbit {

class SGD : public RuleOptimizer {
 public:
  SGD(std::vector<NamedTensor> params, OptimConfig config);
};

}  // namespace kbit
