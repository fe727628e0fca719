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

namespace {

// out (n) = the sum over rows r of what row(r, p) adds into a zeroed
// partial row p (n). partial (chunks, n): chunk k takes rows
// [k per, (k + 1) per); the chunks are then added in order, so the result
// does not depend on the thread count.
template <typename T, class Row>
void chunked_column_sums(int64_t rows, int64_t n, T* out, Row row) {
  const int64_t chunks = std::max<int64_t>(1, std::min(rows, kReduceChunks));
  const int64_t per = (rows + chunks - 1) / chunks;
  std::vector<T> partial(size_t(chunks * n), T(0));
#pragma omp parallel for if (rows * n >= kParallelMinElements) schedule(static)
  for (int64_t k = 0; k < chunks; ++k) {
    T* p = partial.data() + k * n;
    for (int64_t r = k * per; r < std::min(rows, (k + 1) * per); ++r) {
      row(r, p);
    }
  }
  std::fill(out, out + n, T(0));
  for (int64_t k = 0; k < chunks; ++k) {
    const T* p = partial.data() + k * n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) out[j] += p[j];
  }
}

}  // namespace

template <typename T>
void column_sums(const T* g, T* out, int64_t rows, int64_t n) {
  chunked_column_sums(rows, n, out, [&](int64_t r, T* p) {
    const T* gr = g + r * n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) p[j] += gr[j];
  });
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

// dx rows as they are written; db = their column sums.
template <typename T>
void bias_gelu_backward(const T* x, const T* b, const T* g, T* dx, T* db,
                        int64_t rows, int64_t n) {
  chunked_column_sums(rows, n, db, [&](int64_t r, T* p) {
    const T* xr = x + r * n;
    const T* gr = g + r * n;
    T* dr = dx + r * n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      dr[j] = gr[j] * gelu_grad(xr[j] + b[j]);
      p[j] += dr[j];
    }
  });
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
