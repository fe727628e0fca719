// Adam and AdamW, 32-bit states (m, v).
//
// AdamW (decoupled = true) decays the weights directly, p -= lr * wd * p;
// Adam (decoupled = false) adds wd * p to the gradient (L2). Uses lr, beta1,
// beta2, eps and weight_decay from OptimConfig; momentum and nesterov are
// ignored. The update math is cpu::AdamRule (kernels/cpu/optim_update.h).
// Bias correction uses each parameter's own step count, so a parameter
// that first gets a gradient late starts its correction at 1.
#pragma once

#include "optim/optimizer.h"
#include "optim/state.h"

namespace kbit {

class AdamW : public Optimizer {
 public:
  AdamW(std::vector<NamedTensor> params, OptimConfig config,
        bool decoupled = true);
  int64_t state_bytes() const override { return states_.bytes(); }
  bool decoupled() const { return decoupled_; }

 protected:
  void update(size_t i, const Tensor& param, const Tensor& grad,
              int64_t step) override;

 private:
  bool decoupled_;
  StateStore states_;  // per parameter: m (buffer 0) and v (buffer 1)
};

}  // namespace kbit
