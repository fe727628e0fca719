// Gradient norms and global-norm clipping.
#pragma once

#include <vector>

#include "core/tensor.h"

namespace kbit {

// sqrt(sum of g^2) over every element of every tensor (f32 or f64, any
// layout), accumulated in double. Returns NaN or Inf exactly when some
// element is NaN or Inf (finite f32 squares cannot overflow a double), so
// one pass both measures the norm and detects non-finite gradients.
double global_grad_norm(const std::vector<Tensor>& grads);

// Scales every tensor in place by max_norm / norm when norm > max_norm
// (norm: their global_grad_norm). Returns the factor applied (1: none).
double clip_grad_norm(const std::vector<Tensor>& grads, double max_norm,
                      double norm);

}  // namespace kbit
