// RuleOptimizer: the one driver behind every optimizer name.
//
// It maps config.name to an update rule of kernels/cpu/optim_blockwise.h
// (sgd -> momentum or nesterov, or plain SGD without state when momentum is
// 0; adam / adamw -> adam with L2 / decoupled decay; rmsprop, adagrad, lion,
// lamb, lars -> their rules) and runs it on each parameter's states:
//   32-bit      cpu::rule_update_f32 (the same formulas as the fused
//               kernels, so 32- and 8-bit runs differ only by quantization)
//   8/4-bit     cpu::blockwise_step, one fused pass per block
//   blockwise   false (one absmax per tensor, the paper's ablation): the
//               states are decoded into a full-size f32 workspace, updated by
//               rule_update_f32, and requantized with the new global absmax
//               (two passes over the state; slower, and it briefly holds an
//               f32 copy: an ablation path, not a production one)
// LAMB and LARS first take the norms of the update they are about to apply
// (blockwise_norms / rule_norms_f32) and pass the trust ratio as the update
// scale (OptimConfig: max_trust_ratio, max_unorm), in every path.
//
// Codebooks (OptimConfig::map): signed states (momentum, Adam's m, Lion)
// use the map, non-negative ones (Adam's v, RMSprop's and Adagrad's
// accumulators) its unsigned variant. bitsandbytes stores RMSprop and
// Adagrad states in the signed map and wastes half the codes; kbit does not.
//
// Per-parameter settings: config, then overrides in order, then the
// module's forced bits (StableEmbedding); a tensor with fewer elements than
// min_8bit_size keeps 32-bit states.
//
// Percentile clipping scales the parameter's gradient tensor in place (as
// global-norm clipping does), after the global clip.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "kernels/cpu/optim_blockwise.h"
#include "optim/optimizer.h"
#include "optim/state.h"

namespace kbit {

// One parameter's resolved state settings.
struct ParamSettings {
  int bits = 32;           // 32, 8 or 4 (after min_8bit_size)
  int64_t block_size = 0;  // quantized only; 0: one absmax per tensor
  std::string map1, map2;  // state codebooks (quantized only)
  int percentile_clipping = 100;
  double weight_decay = 0.0;
};

// True when `name` matches the glob `pattern` (* any run, ? one char).
bool glob_match(const std::string& pattern, const std::string& name);

class RuleOptimizer : public Optimizer {
 public:
  // forced_bits: (parameter name, bits) applied after the overrides.
  RuleOptimizer(std::vector<NamedTensor> params, OptimConfig config,
                std::vector<std::pair<std::string, int>> forced_bits = {});

  int64_t state_bytes() const override { return states_.bytes(); }
  cpu::BlockwiseRule rule() const { return rule_; }
  bool stateless() const { return stateless_; }  // plain SGD
  const ParamSettings& settings(size_t i) const { return settings_[i]; }
  // Parameter i's state; null before its first update.
  const ParamState* state(size_t i) const { return states_.find(i); }
  ParamState* mutable_state(size_t i) { return states_.find(i); }

 protected:
  void update(size_t i, const Tensor& param, const Tensor& grad,
              int64_t step) override;
  void save_buffers(std::ostream& out) const override;
  void load_buffers(std::istream& in) override;

 private:
  void resolve_settings(
      const std::vector<std::pair<std::string, int>>& forced_bits);
  StateBuffer make_buffer(size_t i, int k) const;
  ParamState& init_state(size_t i);
  cpu::BlockwiseHyper hyper(size_t i, int64_t step) const;
  float trust_scale(const cpu::BlockwiseNorms& n) const;
  void clip_percentile(ParamState& st, int percentile, float* g, int64_t n);
  void apply_f32(const cpu::BlockwiseHyper& h, float* p, const float* g,
                 float* s1, float* s2, int64_t n);
  void apply_blockwise(const cpu::BlockwiseHyper& h, float* p, const float* g,
                       ParamState& st, int64_t n);
  void apply_tensorwise(const cpu::BlockwiseHyper& h, float* p, const float* g,
                        ParamState& st, int64_t n);

  cpu::BlockwiseRule rule_ = cpu::BlockwiseRule::adam;
  bool stateless_ = false;
  int n_states_ = 1;
  std::vector<ParamSettings> settings_;
  StateStore states_;
};

}  // namespace kbit
