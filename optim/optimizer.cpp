// Optimizer base: config validation, the non-finite-gradient policy,
// global-norm clipping, the state file header, and the factory.
#include "optim/optimizer.h"

#include <cmath>
#include <cstring>
#include <istream>
#include <ostream>

#include "optim/clip.h"
#include "optim/rule_optimizer.h"

namespace kbit {
namespace {

constexpr const char* kNames[] = {"sgd",     "adam", "adamw", "rmsprop",
                                  "adagrad", "lion", "lamb",  "lars"};
constexpr const char* kMaps[] = {"dynamic", "linear", "quantile"};
// The state file's first bytes and format version.
constexpr char kMagic[8] = {'k', 'b', 'i', 't', 'o', 'p', 't', '\n'};
constexpr uint32_t kVersion = 1;

std::string choices(const char* const* begin, const char* const* end) {
  std::string s;
  for (const char* const* it = begin; it != end; ++it) {
    s += (it == begin ? "" : ", ") + std::string(*it);
  }
  return s;
}

bool one_of(const std::string& v, const char* const* begin,
            const char* const* end) {
  for (const char* const* it = begin; it != end; ++it) {
    if (v == *it) return true;
  }
  return false;
}

void check_unit(const std::string& key, double v) {
  KBIT_USER_CHECK(v >= 0 && v < 1, key, ": expected a value in [0, 1), got ",
                  v);
}

// The state-storage fields, shared by the config and its overrides.
void check_state_fields(const std::string& prefix, const std::string& name,
                        int bits, int block_size, const std::string& map,
                        int64_t min_8bit_size, int percentile) {
  KBIT_USER_CHECK(bits == 32 || bits == 8 || bits == 4, prefix,
                  "bits: expected one of 32, 8, 4, got ", bits);
  KBIT_USER_CHECK(bits != 4 || name == "adam" || name == "adamw", prefix,
                  "bits: 4-bit states exist for adam and adamw only, got 4 ",
                  "with '", name, "' (choose 32 or 8)");
  const bool pow2 = block_size > 0 && (block_size & (block_size - 1)) == 0;
  KBIT_USER_CHECK(
      block_size == 0 || (pow2 && block_size >= 32 && block_size <= 4096),
      prefix, "block_size: expected 0 (the default: 256 for 8-bit, 128 ",
      "for 4-bit) or a power of two in 32..4096 (32, 64, ..., ", "4096), got ",
      block_size);
  KBIT_USER_CHECK(one_of(map, std::begin(kMaps), std::end(kMaps)), prefix,
                  "map: expected one of ",
                  choices(std::begin(kMaps), std::end(kMaps)), ", got '", map,
                  "'");
  KBIT_USER_CHECK(min_8bit_size >= 0, prefix,
                  "min_8bit_size: expected a value >= 0, got ", min_8bit_size);
  KBIT_USER_CHECK(percentile >= 1 && percentile <= 100, prefix,
                  "percentile_clipping: expected a value in 1..100 (100 = ",
                  "off), got ", percentile);
}

}  // namespace

void validate_optim_config(const OptimConfig& c) {
  KBIT_USER_CHECK(one_of(c.name, std::begin(kNames), std::end(kNames)),
                  "optim.name: expected one of ",
                  choices(std::begin(kNames), std::end(kNames)), ", got '",
                  c.name, "'");
  KBIT_USER_CHECK(c.lr >= 0, "optim.lr: expected a value >= 0, got ", c.lr);
  KBIT_USER_CHECK(c.weight_decay >= 0,
                  "optim.weight_decay: expected a value >= 0, got ",
                  c.weight_decay);
  check_unit("optim.momentum", c.momentum);
  check_unit("optim.beta1", c.beta1);
  check_unit("optim.beta2", c.beta2);
  check_unit("optim.alpha", c.alpha);
  KBIT_USER_CHECK(c.eps > 0, "optim.eps: expected a value > 0, got ", c.eps);
  KBIT_USER_CHECK(!c.nesterov || c.name != "sgd" || c.momentum > 0,
                  "optim.nesterov: expected momentum > 0 with nesterov, got ",
                  "momentum ", c.momentum);
  KBIT_USER_CHECK(c.name != "lars" || c.momentum > 0,
                  "optim.momentum: lars expects momentum > 0, got ",
                  c.momentum);
  KBIT_USER_CHECK(c.clip_grad_norm >= 0,
                  "optim.clip_grad_norm: expected a value >= 0, got ",
                  c.clip_grad_norm);
  KBIT_USER_CHECK(c.max_trust_ratio > 0,
                  "optim.max_trust_ratio: expected a value > 0, got ",
                  c.max_trust_ratio);
  KBIT_USER_CHECK(c.max_unorm >= 0,
                  "optim.max_unorm: expected a value >= 0 (0 = off), got ",
                  c.max_unorm);
  check_state_fields("optim.", c.name, c.bits, c.block_size, c.map,
                     c.min_8bit_size, c.percentile_clipping);

  for (size_t j = 0; j < c.overrides.size(); ++j) {
    const OptimOverride& o = c.overrides[j];
    const std::string prefix = str("optim.overrides[", j, "].");
    KBIT_USER_CHECK(!o.pattern.empty(), prefix,
                    "pattern: expected a parameter name glob, got ''");
    check_state_fields(prefix, c.name, o.bits.value_or(c.bits),
                       o.block_size.value_or(c.block_size),
                       o.map.value_or(c.map),
                       o.min_8bit_size.value_or(c.min_8bit_size),
                       o.percentile_clipping.value_or(c.percentile_clipping));
    KBIT_USER_CHECK(o.weight_decay.value_or(0) >= 0, prefix,
                    "weight_decay: expected a value >= 0, got ",
                    *o.weight_decay);
  }
}

Optimizer::Optimizer(std::vector<NamedTensor> params, OptimConfig config)
    : params_(std::move(params)), config_(std::move(config)) {
  validate_optim_config(config_);
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

void Optimizer::save_state(std::ostream& out) const {
  out.write(kMagic, sizeof(kMagic));
  out.write(reinterpret_cast<const char*>(&kVersion), sizeof(kVersion));
  uint32_t len = uint32_t(config_.name.size());
  out.write(reinterpret_cast<const char*>(&len), sizeof(len));
  out.write(config_.name.data(), std::streamsize(len));
  out.write(reinterpret_cast<const char*>(&steps_), sizeof(steps_));
  out.write(reinterpret_cast<const char*>(&skipped_), sizeof(skipped_));
  save_buffers(out);
  KBIT_USER_CHECK(out.good(), "[save_state] failed writing optimizer state");
}

void Optimizer::load_state(std::istream& in) {
  char magic[sizeof(kMagic)] = {};
  in.read(magic, sizeof(magic));
  KBIT_USER_CHECK(in.gcount() == std::streamsize(sizeof(magic)) &&
                      std::memcmp(magic, kMagic, sizeof(kMagic)) == 0,
                  "[load_state] expected a kbit optimizer state, got other ",
                  "data");
  uint32_t version = 0, len = 0;
  in.read(reinterpret_cast<char*>(&version), sizeof(version));
  KBIT_USER_CHECK(in && version == kVersion, "[load_state] expected format ",
                  "version ", kVersion, ", got ", version);
  in.read(reinterpret_cast<char*>(&len), sizeof(len));
  KBIT_USER_CHECK(in && len < 64, "[load_state] truncated header");
  std::string name(len, '\0');
  in.read(name.data(), std::streamsize(len));
  KBIT_USER_CHECK(in && name == config_.name, "[load_state] expected state ",
                  "of optimizer '", config_.name, "', got '", name, "'");
  int64_t steps = 0, skipped = 0;
  in.read(reinterpret_cast<char*>(&steps), sizeof(steps));
  in.read(reinterpret_cast<char*>(&skipped), sizeof(skipped));
  KBIT_USER_CHECK(in.good(), "[load_state] truncated header");
  load_buffers(in);  // throws before changing anything on bad data
  steps_ = steps;
  skipped_ = skipped;
}

std::unique_ptr<Optimizer> make_optimizer(std::vector<NamedTensor> params,
                                          const OptimConfig& config) {
  validate_optim_config(config);
  return std::make_unique<RuleOptimizer>(std::move(params), config);
}

std::unique_ptr<Optimizer> make_optimizer(const Module& module,
                                          const OptimConfig& config) {
  validate_optim_config(config);
  return std::make_unique<RuleOptimizer>(module.named_parameters(), config,
                                         module.optim_bits_hints());
}

}  // namespace kbit
