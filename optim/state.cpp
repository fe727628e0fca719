#include "optim/state.h"

namespace kbit {
namespace {

// Elements below which one thread zeroes a state (the fork costs more).
constexpr int64_t kParallelThreshold = int64_t(1) << 15;

}  // namespace

StateBuffer StateBuffer::zeros_f32(const Shape& shape) {
  StateBuffer b;
  b.kind_ = Kind::f32;
  b.values_ = Tensor::empty(shape, DType::f32, MemTag::optim_state);
  // Zeroed by all threads: the first touch of fresh pages dominates (about
  // 2 s for 800 MB on one thread here), and it splits across threads.
  float* v = b.values_.data<float>();
  int64_t n = b.values_.numel();
#pragma omp parallel for schedule(static) if (n > kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) v[i] = 0.f;
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
