// Module: a named tree of parameters, the base of every model.
//
// Parameters are leaf tensors tagged `param` with requires_grad. Names are
// dotted paths ("fc1.weight"), which configs use for per-parameter optimizer
// overrides.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace kbit {

using NamedTensor = std::pair<std::string, Tensor>;

class Module {
 public:
  virtual ~Module() = default;

  // Every parameter of this module and its children, in registration order.
  std::vector<NamedTensor> named_parameters() const;
  std::vector<Tensor> parameters() const;
  int64_t parameter_count() const;  // number of scalar parameters

  // Training mode (dropout on) or evaluation mode, for the whole tree.
  void train(bool on = true);
  bool training() const { return training_; }
  void zero_grad() const;  // drops every parameter's gradient

  // Optimizer-state bits a module forces for some of its parameters, as
  // (dotted parameter name, bits), children included; make_optimizer(Module)
  // applies them after the config's overrides (StableEmbedding: 32).
  std::vector<std::pair<std::string, int>> optim_bits_hints() const;

 protected:
  // Registers `value` (made requires_grad, tagged param) under `name`.
  Tensor register_parameter(const std::string& name, Tensor value);
  // Forces the optimizer state of parameter `name` to `bits` bits.
  void force_optim_bits(const std::string& name, int bits);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name,
                                     std::shared_ptr<M> module) {
    children_.emplace_back(name, module);
    return module;
  }

 private:
  std::vector<NamedTensor> params_;
  std::vector<std::pair<std::string, int>> optim_bits_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

}  // namespace kbit
