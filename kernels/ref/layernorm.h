// Reference layer normalization: plain loops in double. The oracle of
// kernels/cpu/layernorm.h (same arguments and null-pointer rules).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace kbit::ref {

template <typename T>
void layer_norm(const T* x, const T* weight, const T* bias, T* y, T* mean,
                T* rstd, int64_t R, int64_t C, double eps) {
  for (int64_t r = 0; r < R; ++r) {
    const T* xr = x + r * C;
    double m = 0, v = 0;
    for (int64_t j = 0; j < C; ++j) m += xr[j];
    m /= double(C);
    for (int64_t j = 0; j < C; ++j) v += (xr[j] - m) * (xr[j] - m);
    double rs = 1.0 / std::sqrt(v / double(C) + eps);
    mean[r] = T(m);
    rstd[r] = T(rs);
    for (int64_t j = 0; j < C; ++j) {
      double h = (xr[j] - m) * rs;
      y[r * C + j] =
          T(h * (weight ? double(weight[j]) : 1.0) + (bias ? bias[j] : 0.0));
    }
  }
}

template <typename T>
void layer_norm_backward(const T* x, const T* weight, const T* mean,
                         const T* rstd, const T* g, T* dx, T* dweight, T* dbias,
                         int64_t R, int64_t C) {
  std::vector<double> dw(size_t(C), 0.0), db(size_t(C), 0.0);
  for (int64_t r = 0; r < R; ++r) {
    double a = 0, c = 0;
    for (int64_t j = 0; j < C; ++j) {
      double h = (x[r * C + j] - double(mean[r])) * rstd[r];
      double dh = g[r * C + j] * (weight ? double(weight[j]) : 1.0);
      a += dh;
      c += dh * h;
    }
    a /= double(C);
    c /= double(C);
    for (int64_t j = 0; j < C; ++j) {
      double h = (x[r * C + j] - double(mean[r])) * rstd[r];
      double dh = g[r * C + j] * (weight ? double(weight[j]) : 1.0);
      dx[r * C + j] = T(rstd[r] * (dh - a - h * c));
      dw[size_t(j)] += g[r * C + j] * h;
      db[size_t(j)] += g[r * C + j];
    }
  }
  for (int64_t j = 0; j < C; ++j) {
    if (dweight) dweight[j] = T(dw[size_t(j)]);
    if (dbias) dbias[j] = T(db[size_t(j)]);
  }
}

}  // namespace kbit::ref
