// Graph nodes of the autograd tape.
//
// A recorded op's result holds a Node: the op's name, its inputs and a
// backward function that maps the gradient of the result to one gradient per
// input (an undefined Tensor where an input needs none). The engine sums
// gradients that reach a tensor along several paths.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace kbit {

using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_out)>;

struct Node {
  const char* name = "";
  std::vector<Tensor> inputs;
  BackwardFn backward;
};

// Whether ops record history on this thread (false inside NoGradGuard).
bool grad_enabled();

class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// True when grad is enabled and some input requires a gradient.
bool needs_grad(const std::vector<Tensor>& inputs);

// Records `out` as the result of op `name`: when needs_grad(inputs), gives
// `out` a Node with `backward` and marks it requires_grad. Returns `out`.
// `backward` must not capture `out` itself (that would be a cycle); capture
// out.detach() when the result is needed.
Tensor record(Tensor out, const char* name, std::vector<Tensor> inputs,
              BackwardFn backward);

}  // namespace kbit
