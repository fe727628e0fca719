// Optimizer base: validation, the non-finite-gradient policy, global-norm
// clipping, and the factory.
#include "optim/optimizer.h"

#include <cmath>

#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/sgd.h"

namespace kbit {
namespace {

void check_config(const OptimConfig& c) {
  KBIT_USER_CHECK(c.lr >= 0, "[optim] expected lr >= 0, got ", c.lr);
  KBIT_USER_CHECK(c.weight_decay >= 0,
                  "[optim] expected weight_decay >= 0, got ", c.weight_decay);
  KBIT_USER_CHECK(c.momentum >= 0 && c.momentum < 1,
                  "[optim] expected momentum in [0, 1), got ", c.momentum);
  KBIT_USER_CHECK(c.beta1 >= 0 && c.beta1 < 1,
                  "[optim] expected beta1 in [0, 1), got ", c.beta1);
  KBIT_USER_CHECK(c.beta2 >= 0 && c.beta2 < 1,
                  "[optim] expected beta2 in [0, 1), got ", c.beta2);
  KBIT_USER_CHECK(c.eps > 0, "[optim] expected eps > 0, got ", c.eps);
  KBIT_USER_CHECK(c.clip_grad_norm >= 0,
                  "[optim] expected clip_grad_norm >= 0, got ",
                  c.clip_grad_norm);
  // TODO: 8- and 4-bit states come with the 8-bit optimizer issue; until
  // then any other value is refused rather than silently run in 32 bits.
  KBIT_USER_CHECK(c.bits == 32, "[optim] expected bits 32 (8 and 4 are not ",
                  "implemented yet), got ", c.bits);
}

}  // namespace

Optimizer::Optimizer(std::vector<NamedTensor> params, OptimConfig config)
    : params_(std::move(params)), config_(std::move(config)) {
  check_config(config_);
  for (const auto& [name, p] : params_) {
    KBIT_CHECK(p.defined(), "[optim] parameter '", name, "' is undefined");
    KBIT_CHECK(p.dtype() == DType::f32, "[optim] expected f32 parameters, ",
               "got ", dtype_name(p.dtype()), " for '", name, "'");
    KBIT_CHECK(p.is_contiguous(), "[optim] expected contiguous parameters, ",
               "got strides ", shape_str(p.strides()), " for '", name, "'");
  }
}

bool Optimizer::step() {
  std::vector<size_t> index;  // parameters that have a gradient
  std::vector<Tensor> grads;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i].second;
    Tensor g = p.grad();
    if (!g.defined()) continue;
    KBIT_CHECK(g.dtype() == DType::f32, "[optim] expected an f32 gradient, ",
               "got ", dtype_name(g.dtype()), " for '", params_[i].first, "'");
    if (!g.is_contiguous()) {
      g = g.contiguous();
      p.set_grad(g);
    }
    index.push_back(i);
    grads.push_back(g);
  }

  // One pass: the norm is NaN or Inf exactly when some gradient is.
  double norm = global_grad_norm(grads);
  last_grad_norm_ = norm;
  if (!std::isfinite(norm)) {
    ++skipped_;
    return false;
  }
  if (config_.clip_grad_norm > 0) {
    clip_grad_norm(grads, config_.clip_grad_norm, norm);
  }

  ++steps_;
  for (size_t k = 0; k < index.size(); ++k) {
    update(index[k], params_[index[k]].second, grads[k], steps_);
  }
  return true;
}

void Optimizer::zero_grad() {
  for (const auto& np : params_) np.second.zero_grad();
}

std::unique_ptr<Optimizer> make_optimizer(std::vector<NamedTensor> params,
                                          const OptimConfig& config) {
  if (config.name == "sgd") {
    return std::make_unique<SGD>(std::move(params), config);
  }
  if (config.name == "adam" || config.name == "adamw") {
    return std::make_unique<AdamW>(std::move(params), config,
                                   config.name == "adamw");
  }
  throw UserError(str("[optim] expected optimizer name sgd, adam or adamw, ",
                      "got '", config.name, "'"));
}

}  // namespace kbit
