// Optimizer state buffers: the per-parameter memory an update rule keeps.
//
// A StateBuffer is one state (Adam's m, v; SGD's momentum) of one parameter.
// Today it is a 32-bit tensor tagged optim_state. The 8-bit issue adds a
// quantized kind (codes + per-block absmax + a shared codebook) behind the
// same class: bytes() then counts codes and absmax, and the update driver
// picks the fused kernel by kind(). ParamState groups a parameter's buffers
// with its own step count.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace kbit {

class StateBuffer {
 public:
  enum class Kind { f32 };  // quantized kinds come with the 8-bit issue

  // A zero-filled f32 state of `shape`, tagged optim_state.
  static StateBuffer zeros_f32(const Shape& shape);

  Kind kind() const { return kind_; }
  // The f32 values (kind f32 only).
  float* f32_data() const;
  const Tensor& values() const { return values_; }
  // Bytes of every allocation this buffer holds.
  int64_t bytes() const;

 private:
  Kind kind_ = Kind::f32;
  Tensor values_;  // f32: the state itself, the parameter's shape
};

struct ParamState {
  int64_t step = 0;  // updates applied to this parameter (bias correction)
  std::vector<StateBuffer> buffers;
};

// The states of one optimizer's parameters, created on first use.
class StateStore {
 public:
  // Parameter i's state; on first use makes `n_buffers` zero f32 buffers of
  // `param`'s shape.
  ParamState& get(size_t i, const Tensor& param, int n_buffers);
  int64_t bytes() const;

 private:
  std::vector<ParamState> states_;
  std::vector<bool> created_;
};

}  // namespace kbit
