#include "kernels/cpu/reduce.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/elementwise.h"

namespace kbit::cpu {
namespace {

// Columns per thread below which sum_cols splits rows instead of columns.
constexpr int64_t kMinColsPerThread = 256;

template <typename T>
double sum_span(int64_t n, const T* x) {
  double acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += double(x[i]);
  return acc;
}

// acc (cols) += the rows r0..r1 of x (rows, ld), columns c0..c1.
template <typename T>
void add_rows_into(int64_t r0, int64_t r1, int64_t c0, int64_t c1, int64_t ld,
                   const T* x, double* acc) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* xr = x + r * ld;
#pragma omp simd
    for (int64_t c = c0; c < c1; ++c) acc[c] += double(xr[c]);
  }
}

// [begin, end) of chunk k when n items are split into `chunks` parts.
int64_t chunk_begin(int64_t k, int64_t n, int64_t chunks) {
  return n / chunks * k + std::min(k, n % chunks);
}

// The sum of x (n) split into fixed chunks summed in order.
template <typename T>
double sum_parallel(int64_t n, const T* x) {
  int64_t chunks = omp_get_max_threads();
  std::vector<double> partial(size_t(chunks), 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < chunks; ++k) {
    int64_t b = chunk_begin(k, n, chunks), e = chunk_begin(k + 1, n, chunks);
    partial[size_t(k)] = sum_span(e - b, x + b);
  }
  double acc = 0;
  for (double p : partial) acc += p;
  return acc;
}

}  // namespace

template <typename T>
void sum_rows(int64_t rows, int64_t cols, const T* x, T* out) {
  if (rows * cols < kParallelThreshold) {
    for (int64_t r = 0; r < rows; ++r) out[r] = T(sum_span(cols, x + r * cols));
  } else if (rows >= omp_get_max_threads()) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) out[r] = T(sum_span(cols, x + r * cols));
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      out[r] = T(sum_parallel(cols, x + r * cols));
    }
  }
}

template <typename T>
void sum_cols(int64_t rows, int64_t cols, const T* x, T* out) {
  std::vector<double> acc(size_t(cols), 0.0);
  int64_t threads = omp_get_max_threads();
  if (rows * cols < kParallelThreshold || threads == 1) {
    add_rows_into(0, rows, 0, cols, cols, x, acc.data());
  } else if (cols >= kMinColsPerThread * threads) {  // split the columns
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < threads; ++k) {
      int64_t c0 = chunk_begin(k, cols, threads);
      int64_t c1 = chunk_begin(k + 1, cols, threads);
      add_rows_into(0, rows, c0, c1, cols, x, acc.data());
    }
  } else {  // split the rows; add the partial sums in chunk order
    std::vector<double> partial(size_t(threads * cols), 0.0);
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < threads; ++k) {
      int64_t r0 = chunk_begin(k, rows, threads);
      int64_t r1 = chunk_begin(k + 1, rows, threads);
      add_rows_into(r0, r1, 0, cols, cols, x, partial.data() + k * cols);
    }
    add_rows_into(0, threads, 0, cols, cols, partial.data(), acc.data());
  }
  for (int64_t c = 0; c < cols; ++c) out[c] = T(acc[size_t(c)]);
}

template <typename T>
void sum_mid(int64_t outer, int64_t red, int64_t inner, const T* x, T* out) {
  if (inner == 1) return sum_rows(outer, red, x, out);
  if (outer == 1) return sum_cols(red, inner, x, out);
  auto block = [&](int64_t o, std::vector<double>& acc) {
    std::fill(acc.begin(), acc.end(), 0.0);
    add_rows_into(0, red, 0, inner, inner, x + o * red * inner, acc.data());
    for (int64_t i = 0; i < inner; ++i) out[o * inner + i] = T(acc[size_t(i)]);
  };
  if (outer * red * inner >= kParallelThreshold) {
#pragma omp parallel
    {
      std::vector<double> acc(static_cast<size_t>(inner));
#pragma omp for schedule(static)
      for (int64_t o = 0; o < outer; ++o) block(o, acc);
    }
  } else {
    std::vector<double> acc(static_cast<size_t>(inner));
    for (int64_t o = 0; o < outer; ++o) block(o, acc);
  }
}

#define KBIT_INSTANTIATE(T)                               \
  template void sum_rows(int64_t, int64_t, const T*, T*); \
  template void sum_cols(int64_t, int64_t, const T*, T*); \
  template void sum_mid(int64_t, int64_t, int64_t, const T*, T*);
KBIT_INSTANTIATE(float)
KBIT_INSTANTIATE(double)
#undef KBIT_INSTANTIATE

}  // namespace kbit::cpu
