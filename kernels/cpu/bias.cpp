// Bias kernels for linear layers: row broadcast and chunked column sums.
#include "kernels/cpu/bias.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/nn_common.h"

namespace kbit::cpu {

template <typename T>
void broadcast_rows(const T* b, T* y, int64_t rows, int64_t n) {
#pragma omp parallel for if (rows * n >= kParallelMinElements) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(y + r * n, b, size_t(n) * sizeof(T));
  }
}

template <typename T>
void column_sums(const T* g, T* out, int64_t rows, int64_t n) {
  // partial (chunks, n): chunk k sums its rows; chunks are added in order.
  int64_t chunks = std::max<int64_t>(1, std::min(rows, kReduceChunks));
  int64_t per = (rows + chunks - 1) / chunks;
  std::vector<T> partial(size_t(chunks * n), T(0));
#pragma omp parallel for if (rows * n >= kParallelMinElements) schedule(static)
  for (int64_t k = 0; k < chunks; ++k) {
    T* p = partial.data() + k * n;
    for (int64_t r = k * per; r < std::min(rows, (k + 1) * per); ++r) {
      const T* gr = g + r * n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) p[j] += gr[j];
    }
  }
  std::fill(out, out + n, T(0));
  for (int64_t k = 0; k < chunks; ++k) {
    const T* p = partial.data() + k * n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) out[j] += p[j];
  }
}

template <typename T>
void bias_gelu(const T* x, const T* b, T* y, int64_t rows, int64_t n) {
#pragma omp parallel for if (rows * n >= kParallelMinElements) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) yr[j] = gelu_value(xr[j] + b[j]);
  }
}

template <typename T>
void bias_gelu_backward(const T* x, const T* b, const T* g, T* dx, T* db,
                        int64_t rows, int64_t n) {
  // partial (chunks, n): chunk k sums the dx rows it writes.
  int64_t chunks = std::max<int64_t>(1, std::min(rows, kReduceChunks));
  int64_t per = (rows + chunks - 1) / chunks;
  std::vector<T> partial(size_t(chunks * n), T(0));
#pragma omp parallel for if (rows * n >= kParallelMinElements) schedule(static)
  for (int64_t k = 0; k < chunks; ++k) {
    T* p = partial.data() + k * n;
    for (int64_t r = k * per; r < std::min(rows, (k + 1) * per); ++r) {
      const T* xr = x + r * n;
      const T* gr = g + r * n;
      T* dr = dx + r * n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        dr[j] = gr[j] * gelu_grad(xr[j] + b[j]);
        p[j] += dr[j];
      }
    }
  }
  std::fill(db, db + n, T(0));
  for (int64_t k = 0; k < chunks; ++k) {
    const T* p = partial.data() + k * n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) db[j] += p[j];
  }
}

template void broadcast_rows(const float*, float*, int64_t, int64_t);
template void broadcast_rows(const double*, double*, int64_t, int64_t);
template void column_sums(const float*, float*, int64_t, int64_t);
template void column_sums(const double*, double*, int64_t, int64_t);
template void bias_gelu(const float*, const float*, float*, int64_t, int64_t);
template void bias_gelu(const double*, const double*, double*, int64_t,
                        int64_t);
template void bias_gelu_backward(const float*, const float*, const float*,
                                 float*, float*, int64_t, int64_t);
template void bias_gelu_backward(const double*, const double*, const double*,
                                 double*, double*, int64_t, int64_t);

}  // namespace kbit::cpu
