// Module: the parameter tree (models/module.h).
#include "models/module.h"

namespace kbit {

std::vector<NamedTensor> Module::named_parameters() const {
  std::vector<NamedTensor> out = params_;
  for (const auto& [name, child] : children_) {
    for (auto& [sub, t] : child->named_parameters()) {
      out.emplace_back(name + "." + sub, t);
    }
  }
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& np : named_parameters()) out.push_back(np.second);
  return out;
}

int64_t Module::parameter_count() const {
  int64_t n = 0;
  for (const auto& np : named_parameters()) n += np.second.numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& child : children_) child.second->train(on);
}

void Module::zero_grad() const {
  for (const auto& np : named_parameters()) np.second.zero_grad();
}

std::vector<std::pair<std::string, int>> Module::optim_bits_hints() const {
  std::vector<std::pair<std::string, int>> out = optim_bits_;
  for (const auto& [name, child] : children_) {
    for (auto& [sub, bits] : child->optim_bits_hints()) {
      out.emplace_back(name + "." + sub, bits);
    }
  }
  return out;
}

void Module::force_optim_bits(const std::string& name, int bits) {
  bool found = false;
  for (const auto& np : params_) found = found || np.first == name;
  KBIT_CHECK(found, "[module] force_optim_bits: no parameter '", name, "'");
  optim_bits_.emplace_back(name, bits);
}

Tensor Module::register_parameter(const std::string& name, Tensor value) {
  KBIT_CHECK(value.defined(), "[module] parameter '", name, "' is undefined");
  for (const auto& np : params_) {
    KBIT_CHECK(np.first != name, "[module] parameter '", name,
               "' is registered twice");
  }
  value.storage()->retag(MemTag::param);
  value.set_requires_grad(true);
  params_.emplace_back(name, value);
  return value;
}

}  // namespace kbit
