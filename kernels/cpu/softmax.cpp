// Softmax kernels: a row loop for the last axis (max, exp and sum, scale:
// three passes over a row in cache) and an (n, inner) block loop for other
// axes, vectorized across inner. Rows go to OpenMP threads above the size
// threshold.
#include "kernels/cpu/softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/fast_exp.h"
#include "kernels/cpu/nn_common.h"

namespace kbit::cpu {
namespace {

// One row x (n) -> y (n).
// The max reductions are written `m > v ? m : v`: with std::max, GCC 12
// keeps `omp simd reduction(max)` loops scalar (measured 10x slower).
template <typename T>
void softmax_row(const T* x, T* y, int64_t n, bool log) {
  T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < n; ++j) m = m > x[j] ? m : x[j];

  T s = 0;
  if (log) {
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; ++j) {
      y[j] = x[j] - m;
      s += exp_of(y[j]);
    }
    T ls = std::log(s);
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) y[j] -= ls;
    return;
  }
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; ++j) {
    y[j] = exp_of(x[j] - m);
    s += y[j];
  }
  T r = T(1) / s;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) y[j] *= r;
}

// One (n, inner) block, vectorized across inner; m and s are scratch
// buffers of inner elements.
template <typename T>
void softmax_block(const T* x, T* y, int64_t n, int64_t inner, bool log, T* m,
                   T* s) {
  std::copy(x, x + inner, m);
  for (int64_t k = 1; k < n; ++k) {
    const T* xk = x + k * inner;
#pragma omp simd
    for (int64_t i = 0; i < inner; ++i) m[i] = m[i] > xk[i] ? m[i] : xk[i];
  }
  std::fill(s, s + inner, T(0));
  for (int64_t k = 0; k < n; ++k) {
    const T* xk = x + k * inner;
    T* yk = y + k * inner;
#pragma omp simd
    for (int64_t i = 0; i < inner; ++i) {
      T e = exp_of(xk[i] - m[i]);
      s[i] += e;
      yk[i] = log ? xk[i] - m[i] : e;
    }
  }
  for (int64_t i = 0; i < inner; ++i) s[i] = log ? std::log(s[i]) : 1 / s[i];
  for (int64_t k = 0; k < n; ++k) {
    T* yk = y + k * inner;
#pragma omp simd
    for (int64_t i = 0; i < inner; ++i) {
      yk[i] = log ? yk[i] - s[i] : yk[i] * s[i];
    }
  }
}

template <typename T>
void softmax_backward_row(const T* y, const T* g, T* dx, int64_t n, bool log) {
  T s = 0;
  if (log) {
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; ++j) s += g[j];
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) dx[j] = g[j] - exp_of(y[j]) * s;
    return;
  }
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; ++j) s += g[j] * y[j];
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) dx[j] = y[j] * (g[j] - s);
}

template <typename T>
void softmax_backward_block(const T* y, const T* g, T* dx, int64_t n,
                            int64_t inner, bool log, T* s) {
  std::fill(s, s + inner, T(0));
  for (int64_t k = 0; k < n; ++k) {
    const T* yk = y + k * inner;
    const T* gk = g + k * inner;
#pragma omp simd
    for (int64_t i = 0; i < inner; ++i) s[i] += log ? gk[i] : gk[i] * yk[i];
  }
  for (int64_t k = 0; k < n; ++k) {
    const T* yk = y + k * inner;
    const T* gk = g + k * inner;
    T* dk = dx + k * inner;
#pragma omp simd
    for (int64_t i = 0; i < inner; ++i) {
      dk[i] = log ? gk[i] - exp_of(yk[i]) * s[i] : yk[i] * (gk[i] - s[i]);
    }
  }
}

}  // namespace

template <typename T>
void softmax(const T* x, T* y, int64_t outer, int64_t n, int64_t inner,
             bool log) {
  if (outer * n * inner == 0) return;
  bool par = outer * n * inner >= kParallelMinElements;
  if (inner == 1) {
#pragma omp parallel for if (par) schedule(static)
    for (int64_t o = 0; o < outer; ++o) {
      softmax_row(x + o * n, y + o * n, n, log);
    }
    return;
  }
#pragma omp parallel if (par)
  {
    std::vector<T> m(static_cast<size_t>(inner));
    std::vector<T> s(static_cast<size_t>(inner));
#pragma omp for schedule(static)
    for (int64_t o = 0; o < outer; ++o) {
      int64_t off = o * n * inner;
      softmax_block(x + off, y + off, n, inner, log, m.data(), s.data());
    }
  }
}

template <typename T>
void softmax_backward(const T* y, const T* g, T* dx, int64_t outer, int64_t n,
                      int64_t inner, bool log) {
  if (outer * n * inner == 0) return;
  bool par = outer * n * inner >= kParallelMinElements;
  if (inner == 1) {
#pragma omp parallel for if (par) schedule(static)
    for (int64_t o = 0; o < outer; ++o) {
      softmax_backward_row(y + o * n, g + o * n, dx + o * n, n, log);
    }
    return;
  }
#pragma omp parallel if (par)
  {
    std::vector<T> s(static_cast<size_t>(inner));
#pragma omp for schedule(static)
    for (int64_t o = 0; o < outer; ++o) {
      int64_t off = o * n * inner;
      softmax_backward_block(y + off, g + off, dx + off, n, inner, log,
                             s.data());
    }
  }
}

template void softmax(const float*, float*, int64_t, int64_t, int64_t, bool);
template void softmax(const double*, double*, int64_t, int64_t, int64_t, bool);
template void softmax_backward(const float*, const float*, float*, int64_t,
                               int64_t, int64_t, bool);
template void softmax_backward(const double*, const double*, double*, int64_t,
                               int64_t, int64_t, bool);

}  // namespace kbit::cpu
