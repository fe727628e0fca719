// Row-broadcast and column sums of a (rows, n) matrix: the bias of linear
// layers (forward fill, backward reduction); and the bias fused with the
// GELU after it. Contiguous arrays. The oracle is kernels/ref/bias.h.
#pragma once

#include <cstdint>

namespace kbit::cpu {

// y (rows, n): every row set to b (n).
template <typename T>
void broadcast_rows(const T* b, T* y, int64_t rows, int64_t n);

// out (n) = sum over rows of g (rows, n), in fixed row chunks so the result
// does not depend on the number of threads.
template <typename T>
void column_sums(const T* g, T* out, int64_t rows, int64_t n);

// y (rows, n) = gelu(x + b) (tanh form, kernels/cpu/elementwise.h), b (n):
// one pass instead of a bias fill, the GEMM reading it back, and a GELU.
template <typename T>
void bias_gelu(const T* x, const T* b, T* y, int64_t rows, int64_t n);

// dx (rows, n) = g * gelu'(x + b) and db (n) = its column sums (both
// overwritten; db summed in fixed row chunks like column_sums).
template <typename T>
void bias_gelu_backward(const T* x, const T* b, const T* g, T* dx, T* db,
                        int64_t rows, int64_t n);

}  // namespace kbit::cpu
