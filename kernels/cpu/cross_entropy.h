// Fused cross-entropy over rows of logits, forward and backward, on the CPU.
//
// Shapes: N rows, C classes. logits (N, C) and dlogits (N, C) contiguous,
// targets (N) of int32_t or int64_t with values in [0, C) (the caller
// checks), lse (N) the log-sum-exp of each row. The oracle is
// kernels/ref/cross_entropy.h.
#pragma once

#include <cstdint>

namespace kbit::cpu {

// Writes lse (N) and returns the mean over rows of lse - logits[target].
template <typename T, typename I>
double cross_entropy(const T* logits, const I* targets, T* lse, int64_t N,
                     int64_t C);

// dlogits = scale * (softmax(logits) - onehot(targets)), softmax from lse.
// The mean's gradient is scale = grad / N.
template <typename T, typename I>
void cross_entropy_backward(const T* logits, const I* targets, const T* lse,
                            double scale, T* dlogits, int64_t N, int64_t C);

}  // namespace kbit::cpu
