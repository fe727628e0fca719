// Reference softmax / log-softmax: plain loops in double over an
// (outer, n, inner) array. The oracle of kernels/cpu/softmax.h.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace kbit::ref {

template <typename T>
void softmax(const T* x, T* y, int64_t outer, int64_t n, int64_t inner,
             bool log) {
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      const T* xr = x + o * n * inner + i;
      T* yr = y + o * n * inner + i;
      double m = -INFINITY;
      for (int64_t k = 0; k < n; ++k) m = std::fmax(m, xr[k * inner]);
      double s = 0;
      for (int64_t k = 0; k < n; ++k) s += std::exp(xr[k * inner] - m);
      for (int64_t k = 0; k < n; ++k) {
        double z = xr[k * inner] - m;
        yr[k * inner] = T(log ? z - std::log(s) : std::exp(z) / s);
      }
    }
  }
}

template <typename T>
void softmax_backward(const T* y, const T* g, T* dx, int64_t outer, int64_t n,
                      int64_t inner, bool log) {
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      int64_t base = o * n * inner + i;
      double s = 0;
      for (int64_t k = 0; k < n; ++k) {
        int64_t j = base + k * inner;
        s += log ? double(g[j]) : double(g[j]) * y[j];
      }
      for (int64_t k = 0; k < n; ++k) {
        int64_t j = base + k * inner;
        dx[j] = T(log ? g[j] - std::exp(double(y[j])) * s : y[j] * (g[j] - s));
      }
    }
  }
}

}  // namespace kbit::ref
