// Optimizer: one per parameter list, with per-parameter state buffers.
//
// Each optimizer has two parts (STYLE.md 8): "init state" (buffers tagged
// optim_state, created on the first step) and "apply update" (one fused
// kernel per update rule). State buffers are 32-bit tensors or quantized
// (codes + per-block absmax + codebook, optim/state.h); the driver is
// optim/rule_optimizer.h.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "models/module.h"

namespace kbit {

// Settings of the parameters whose name matches `pattern` (a glob: `*` any
// run of characters, `?` one character, matched against the whole dotted
// name). Overrides apply in order, later ones win; unset fields keep the
// value from OptimConfig. A pattern that matches no parameter is refused.
struct OptimOverride {
  std::string pattern;
  std::optional<int> bits;
  std::optional<int> block_size;
  std::optional<std::string> map;
  std::optional<bool> blockwise;
  std::optional<int64_t> min_8bit_size;
  std::optional<int> percentile_clipping;
  std::optional<double> weight_decay;
};

// Settings shared by every optimizer (DESIGN.md section 5). The config keys
// are optim.<field name>. Fields a rule does not use are ignored, as noted.
struct OptimConfig {
  // sgd, adam, adamw, rmsprop, adagrad, lion, lamb, lars
  std::string name = "adamw";
  double lr = 1e-3;
  // Decoupled (p -= lr * wd * p) for adamw and lion; added to u for lamb;
  // L2 (g += wd * p) for sgd, adam, rmsprop, adagrad, lars.
  double weight_decay = 0.0;
  double momentum = 0.9;  // sgd, lars (0 with sgd: plain SGD, no state)
  bool nesterov = false;  // sgd
  double beta1 = 0.9;     // adam, adamw, lamb, lion (direction mix)
  double beta2 = 0.999;   // adam, adamw, lamb, lion (0.99 is Lion's usual)
  double alpha = 0.99;    // rmsprop: decay of the squared-gradient average
  double eps = 1e-8;      // adam, adamw, lamb, rmsprop, adagrad

  // State storage (optim/state.h).
  int bits = 32;       // 32, 8, or 4 (adam, adamw only)
  int block_size = 0;  // 0: 256 for 8-bit, 128 for 4-bit; else 2^k, 32..4096
  // Codebook of signed states (first moments, momentum); non-negative
  // states (second moments, rmsprop, adagrad) use its unsigned variant:
  // dynamic (-> udynamic), linear (-> ulinear), quantile (fixed fit to
  // N(0,1) -> chi-square(1)). At 4 bits the second moment always uses the
  // zero-free linear map ulinear_nz.
  std::string map = "dynamic";
  bool blockwise = true;  // false: one absmax per tensor (paper ablation)
  int64_t min_8bit_size = 4096;  // numel below this: 32-bit state

  // Clipping. percentile_clipping p in [1, 100): each parameter keeps its
  // last 100 squared gradient norms and scales its gradient down to the
  // p-th smallest of them (the ring starts filled with the first norm);
  // 100 = off. clip_grad_norm: global L2 norm clip after the non-finite
  // check, 0 = off.
  int percentile_clipping = 100;
  double clip_grad_norm = 0.0;

  // Trust ratios. lamb: scale = min(||p|| / ||u||, max_trust_ratio), 1 when
  // either norm is 0. lars: scale = max_unorm * ||p|| / ||u|| when ||u|| >
  // max_unorm * ||p||, else 1 (u: the momentum update); 0 = off.
  double max_trust_ratio = 10.0;
  double max_unorm = 0.02;

  std::vector<OptimOverride> overrides;
};

// Checks every field of `c` (overrides included, patterns excepted: they
// need the parameter names). Throws UserError "optim.<key>: expected ...,
// got ..." naming the key and the valid choices.
void validate_optim_config(const OptimConfig& c);

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

  // The whole optimizer state, raw (codes and absmax as stored), so a
  // loaded optimizer continues bit for bit. load_state throws UserError on
  // a truncated stream or a state that does not fit the parameters or the
  // config (kinds, shapes, block sizes, codebooks).
  void save_state(std::ostream& out) const;
  void load_state(std::istream& in);

 protected:
  // Applies the update rule to parameter i (its grad is defined, finite and
  // already clipped). `step` counts from 1.
  virtual void update(size_t i, const Tensor& param, const Tensor& grad,
                      int64_t step) = 0;
  virtual void save_buffers(std::ostream& out) const = 0;
  virtual void load_buffers(std::istream& in) = 0;
  const std::vector<NamedTensor>& params() const { return params_; }

 private:
  std::vector<NamedTensor> params_;
  OptimConfig config_;
  int64_t steps_ = 0;
  int64_t skipped_ = 0;
  double last_grad_norm_ = 0.0;
};

// Builds the optimizer named by config.name; throws UserError listing the
// valid names (and for any invalid setting, see validate_optim_config).
std::unique_ptr<Optimizer> make_optimizer(std::vector<NamedTensor> params,
                                          const OptimConfig& config);
// The same for a module's parameters, honouring its forced state bits
// (Module::optim_bits_hints: StableEmbedding keeps a 32-bit state).
std::unique_ptr<Optimizer> make_optimizer(const Module& module,
                                          const OptimConfig& config);

}  // namespace kbit
