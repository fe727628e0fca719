#include "optim/state.h"

namespace kbit {

StateBuffer StateBuffer::zeros_f32(const Shape& shape) {
  StateBuffer b;
  b.kind_ = Kind::f32;
  b.values_ = Tensor::zeros(shape, DType::f32, MemTag::optim_state);
  return b;
}

float* StateBuffer::f32_data() const {
  KBIT_CHECK(kind_ == Kind::f32, "[optim] expected an f32 state buffer");
  return values_.data<float>();
}

int64_t StateBuffer::bytes() const {
  return values_.defined() ? int64_t(values_.storage()->nbytes()) : 0;
}

ParamState& StateStore::get(size_t i, const Tensor& param, int n_buffers) {
  if (states_.size() <= i) {
    states_.resize(i + 1);
    created_.resize(i + 1, false);
  }
  ParamState& st = states_[i];
  if (!created_[i]) {
    for (int k = 0; k < n_buffers; ++k) {
      st.buffers.push_back(StateBuffer::zeros_f32(param.shape()));
    }
    created_[i] = true;
  }
  return st;
}

int64_t StateStore::bytes() const {
  int64_t total = 0;
  for (const ParamState& st : states_) {
    for (const StateBuffer& b : st.buffers) total += b.bytes();
  }
  return total;
}

}  // namespace kbit
