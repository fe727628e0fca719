// Softmax and log-softmax over one axis, forward and backward, on the CPU.
//
// Shapes: the axis has n elements; `outer` elements lie before it and
// `inner` after it, so x, y, g, dx are contiguous (outer, n, inner) arrays.
// inner == 1 (the last axis) is the fast path: one row at a time.
// Numerically stable: the row maximum is subtracted before exp.
// The oracle is kernels/ref/softmax.h.
#pragma once

#include <cstdint>

namespace kbit::cpu {

// y = softmax(x) (or log_softmax(x) when `log`) over the n axis.
template <typename T>
void softmax(const T* x, T* y, int64_t outer, int64_t n, int64_t inner,
             bool log);

// dx from the forward result y and the gradient g of y:
// softmax: dx = y * (g - sum(g * y)); log: dx = g - exp(y) * sum(g).
template <typename T>
void softmax_backward(const T* y, const T* g, T* dx, int64_t outer, int64_t n,
                      int64_t inner, bool log);

}  // namespace kbit::cpu
