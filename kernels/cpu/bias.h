// Row-broadcast and column sums of a (rows, n) matrix: the bias of linear
// layers (forward fill, backward reduction). Contiguous arrays. The oracle
// is kernels/ref/bias.h.
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

}  // namespace kbit::cpu
