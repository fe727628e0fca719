// Reference row broadcast and column sums (in double). The oracle of
// kernels/cpu/bias.h.
#pragma once

#include <cstdint>
#include <vector>

namespace kbit::ref {

template <typename T>
void broadcast_rows(const T* b, T* y, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < n; ++j) y[r * n + j] = b[j];
  }
}

template <typename T>
void column_sums(const T* g, T* out, int64_t rows, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    double s = 0;
    for (int64_t r = 0; r < rows; ++r) s += g[r * n + j];
    out[j] = T(s);
  }
}

}  // namespace kbit::ref
