// Fused layer normalization over the last axis, forward and backward.
//
// Shapes: R rows of C channels. x, y, g, dx (R, C) contiguous; weight,
// bias, dweight, dbias (C); mean, rstd (R), kept by the forward pass for
// the backward pass. y = (x - mean) * rstd * weight + bias with the biased
// variance, rstd = 1 / sqrt(var + eps). weight or bias may be null (1 and 0);
// dweight or dbias may be null (not wanted). The oracle is
// kernels/ref/layernorm.h.
#pragma once

#include <cstdint>

namespace kbit::cpu {

template <typename T>
void layer_norm(const T* x, const T* weight, const T* bias, T* y, T* mean,
                T* rstd, int64_t R, int64_t C, double eps);

// With xhat = (x - mean) * rstd and dxhat = g * weight:
// dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),
// dweight = sum over rows of g * xhat, dbias = sum over rows of g
// (both overwritten, not accumulated).
template <typename T>
void layer_norm_backward(const T* x, const T* weight, const T* mean,
                         const T* rstd, const T* g, T* dx, T* dweight, T* dbias,
                         int64_t R, int64_t C);

}  // namespace kbit::cpu
