#include "optim/adamw.h"

#include "kernels/cpu/optim_update.h"

namespace kbit {

AdamW::AdamW(std::vector<NamedTensor> params, OptimConfig config,
             bool decoupled)
    : Optimizer(std::move(params), std::move(config)), decoupled_(decoupled) {}

void AdamW::update(size_t i, const Tensor& param, const Tensor& grad,
                   int64_t /*step*/) {
  // Init state: m and v, zero.
  ParamState& st = states_.get(i, param, 2);
  ++st.step;

  // Apply update.
  const OptimConfig& c = config();
  cpu::AdamHyper h{c.lr,           c.beta1,    c.beta2, c.eps,
                   c.weight_decay, decoupled_, st.step};
  cpu::adam_update(h, param.data<float>(), grad.data<float>(),
                   st.buffers[0].f32_data(), st.buffers[1].f32_data(),
                   param.numel());
}

}  // namespace kbit
