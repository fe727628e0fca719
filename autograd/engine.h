// The backward engine: reverse topological order from a root tensor,
// gradient accumulation, leaf gradients tagged `grad`.
#pragma once

#include "autograd/node.h"

namespace kbit {

// Backpropagates from `root`. `grad` defaults to 1 for a one-element root.
// Leaf tensors with requires_grad accumulate (+=) into their .grad(); the
// backward functions run with grad recording off.
void backward(const Tensor& root, const Tensor& grad = Tensor());

}  // namespace kbit
