// Reference row broadcast and column sums (in double). The oracle of
// kernels/cpu/bias.h.
#pragma once

#include <cmath>
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

// y = gelu(x + b), tanh form, by the textbook formula.
template <typename T>
void bias_gelu(const T* x, const T* b, T* y, int64_t rows, int64_t n) {
  const double c = std::sqrt(2.0 / M_PI), k = 0.044715;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < n; ++j) {
      double u = double(x[r * n + j]) + double(b[j]);
      y[r * n + j] = T(0.5 * u * (1 + std::tanh(c * (u + k * u * u * u))));
    }
  }
}

// dx = g * gelu'(x + b); db = column sums of dx.
template <typename T>
void bias_gelu_backward(const T* x, const T* b, const T* g, T* dx, T* db,
                        int64_t rows, int64_t n) {
  const double c = std::sqrt(2.0 / M_PI), k = 0.044715;
  std::vector<double> sums(size_t(n), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < n; ++j) {
      double u = double(x[r * n + j]) + double(b[j]);
      double t = std::tanh(c * (u + k * u * u * u));
      double d =
          0.5 * (1 + t) + 0.5 * u * (1 - t * t) * c * (1 + 3 * k * u * u);
      double v = double(g[r * n + j]) * d;
      dx[r * n + j] = T(v);
      sums[size_t(j)] += v;
    }
  }
  for (int64_t j = 0; j < n; ++j) db[j] = T(sums[size_t(j)]);
}

}  // namespace kbit::ref
