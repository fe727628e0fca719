#include "optim/sgd.h"

#include "kernels/cpu/optim_update.h"

namespace kbit {

SGD::SGD(std::vector<NamedTensor> params, OptimConfig config)
    : Optimizer(std::move(params), std::move(config)) {
  KBIT_USER_CHECK(!this->config().nesterov || this->config().momentum > 0,
                  "[sgd] expected momentum > 0 with nesterov, got momentum ",
                  this->config().momentum);
}

void SGD::update(size_t i, const Tensor& param, const Tensor& grad,
                 int64_t /*step*/) {
  const OptimConfig& c = config();
  // Init state: one momentum buffer, none for plain SGD.
  int n_buffers = c.momentum > 0 ? 1 : 0;
  ParamState& st = states_.get(i, param, n_buffers);
  ++st.step;

  // Apply update.
  cpu::SgdHyper h{c.lr, c.momentum, c.weight_decay, c.nesterov};
  float* b = n_buffers ? st.buffers[0].f32_data() : nullptr;
  cpu::sgd_update(h, param.data<float>(), grad.data<float>(), b, param.numel());
}

}  // namespace kbit
