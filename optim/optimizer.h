// Optimizer: one per parameter list, with per-parameter state buffers.
//
// Each optimizer has two parts (STYLE.md 8): "init state" (buffers tagged
// optim_state, created on the first step) and "apply update" (one fused
// kernel per update-rule family). State buffers are either 32-bit tensors
// or, from the 8-bit optimizer issue on, quantized (codes + per-block absmax
// + codebook): the interface below does not change for them.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "models/module.h"

namespace kbit {

// Settings shared by every optimizer (DESIGN.md section 5). Fields an
// optimizer does not use are ignored only where documented in its header.
struct OptimConfig {
  std::string name = "adamw";  // sgd, adam, adamw
  double lr = 1e-3;
  double weight_decay = 0.0;   // decoupled for adamw, L2 for sgd/adam
  double momentum = 0.9;       // sgd
  bool nesterov = false;       // sgd
  double beta1 = 0.9;          // adam, adamw
  double beta2 = 0.999;        // adam, adamw
  double eps = 1e-8;           // adam, adamw
  int bits = 32;               // state bits: 32 (8 and 4 come later)
  int block_size = 256;        // quantized states only
  int64_t min_8bit_size = 4096;
  double clip_grad_norm = 0.0;  // 0: off; else global L2 norm clip
};

class Optimizer {
 public:
  Optimizer(std::vector<NamedTensor> params, OptimConfig config);
  virtual ~Optimizer() = default;

  // One update of every parameter that has a gradient. Returns false and
  // changes nothing when a gradient holds NaN or Inf (the step is skipped
  // and counted in skipped_steps()).
  bool step();
  void zero_grad();
  void set_lr(double lr) { config_.lr = lr; }
  double lr() const { return config_.lr; }
  const OptimConfig& config() const { return config_; }
  int64_t steps() const { return steps_; }
  int64_t skipped_steps() const { return skipped_; }
  // Bytes held by state buffers (from the allocations themselves).
  virtual int64_t state_bytes() const = 0;
  // Global L2 norm of the gradients before clipping, from the last step.
  double last_grad_norm() const { return last_grad_norm_; }

 protected:
  // Applies the update rule to parameter i (its grad is defined, finite and
  // already clipped). `step` counts from 1.
  virtual void update(size_t i, const Tensor& param, const Tensor& grad,
                      int64_t step) = 0;
  const std::vector<NamedTensor>& params() const { return params_; }

 private:
  std::vector<NamedTensor> params_;
  OptimConfig config_;
  int64_t steps_ = 0;
  int64_t skipped_ = 0;
  double last_grad_norm_ = 0.0;
};

// Builds the optimizer named by config.name; throws UserError listing the
// valid names.
std::unique_ptr<Optimizer> make_optimizer(std::vector<NamedTensor> params,
                                          const OptimConfig& config);

}  // namespace kbit
