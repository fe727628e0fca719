// SGD with momentum (and Nesterov momentum), 32-bit state.
//
// Uses lr, momentum, nesterov and weight_decay (L2, added to the gradient)
// from OptimConfig; the Adam fields are ignored. The update math is
// cpu::MomentumRule / cpu::SgdRule (kernels/cpu/optim_update.h). With
// momentum 0 no state is allocated.
#pragma once

#include "optim/optimizer.h"
#include "optim/state.h"

namespace kbit {

class SGD : public Optimizer {
 public:
  SGD(std::vector<NamedTensor> params, OptimConfig config);
  int64_t state_bytes() const override { return states_.bytes(); }

 protected:
  void update(size_t i, const Tensor& param, const Tensor& grad,
              int64_t step) override;

 private:
  StateStore states_;  // per parameter: the momentum buffer b
};

}  // namespace kbit
