// Layer-norm kernels: two passes per row forward (mean, then variance),
// one fused pass per row backward with dweight/dbias partials per fixed row
// chunk (summed in order: the same result on any thread count).
#include "kernels/cpu/layernorm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/nn_common.h"

namespace kbit::cpu {
namespace {

// One row x (C) -> y (C); returns mean and rstd through the pointers.
// Two passes over the row (mean, then squared deviations), which stays
// accurate when the mean is large against the spread.
template <typename T>
void norm_row(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd,
              int64_t C, double eps) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < C; ++j) s += x[j];
  T m = s / T(C);
  T v = 0;
#pragma omp simd reduction(+ : v)
  for (int64_t j = 0; j < C; ++j) v += (x[j] - m) * (x[j] - m);
  T r = T(1) / std::sqrt(v / T(C) + T(eps));
  *mean = m;
  *rstd = r;
  if (w && b) {
#pragma omp simd
    for (int64_t j = 0; j < C; ++j) y[j] = (x[j] - m) * r * w[j] + b[j];
  } else {
#pragma omp simd
    for (int64_t j = 0; j < C; ++j) {
      T h = (x[j] - m) * r;
      y[j] = (w ? h * w[j] : h) + (b ? b[j] : T(0));
    }
  }
}

// dx of one row; adds g * xhat and g into the chunk partials pw, pb (C).
template <typename T>
void norm_backward_row(const T* x, const T* w, T m, T r, const T* g, T* dx,
                       T* pw, T* pb, int64_t C) {
  T a = 0, c = 0;  // sums of dxhat and dxhat * xhat
#pragma omp simd reduction(+ : a, c)
  for (int64_t j = 0; j < C; ++j) {
    T h = (x[j] - m) * r;
    T dh = w ? g[j] * w[j] : g[j];
    a += dh;
    c += dh * h;
  }
  a /= T(C);
  c /= T(C);
#pragma omp simd
  for (int64_t j = 0; j < C; ++j) {
    T h = (x[j] - m) * r;
    T dh = w ? g[j] * w[j] : g[j];
    dx[j] = r * (dh - a - h * c);
    pw[j] += g[j] * h;
    pb[j] += g[j];
  }
}

}  // namespace

template <typename T>
void layer_norm(const T* x, const T* weight, const T* bias, T* y, T* mean,
                T* rstd, int64_t R, int64_t C, double eps) {
  if (C == 0) return;
#pragma omp parallel for if (R * C >= kParallelMinElements) schedule(static)
  for (int64_t r = 0; r < R; ++r) {
    norm_row(x + r * C, weight, bias, y + r * C, mean + r, rstd + r, C, eps);
  }
}

template <typename T>
void layer_norm_backward(const T* x, const T* weight, const T* mean,
                         const T* rstd, const T* g, T* dx, T* dweight, T* dbias,
                         int64_t R, int64_t C) {
  // Chunk k of the rows adds into partial[k] = (dweight part, dbias part),
  // (chunks, 2, C); the chunks are then summed in order.
  int64_t chunks = std::max<int64_t>(1, std::min(R, kReduceChunks));
  int64_t per = (R + chunks - 1) / chunks;
  std::vector<T> partial(size_t(chunks * 2 * C), T(0));
#pragma omp parallel for if (R * C >= kParallelMinElements) schedule(static)
  for (int64_t k = 0; k < chunks; ++k) {
    T* pw = partial.data() + k * 2 * C;
    T* pb = pw + C;
    for (int64_t r = k * per; r < std::min(R, (k + 1) * per); ++r) {
      norm_backward_row(x + r * C, weight, mean[r], rstd[r], g + r * C,
                        dx + r * C, pw, pb, C);
    }
  }
  for (int64_t j = 0; j < C; ++j) {
    T sw = 0, sb = 0;
    for (int64_t k = 0; k < chunks; ++k) {
      sw += partial[size_t(k * 2 * C + j)];
      sb += partial[size_t(k * 2 * C + C + j)];
    }
    if (dweight) dweight[j] = sw;
    if (dbias) dbias[j] = sb;
  }
}

template void layer_norm(const float*, const float*, const float*, float*,
                         float*, float*, int64_t, int64_t, double);
template void layer_norm(const double*, const double*, const double*, double*,
                         double*, double*, int64_t, int64_t, double);
template void layer_norm_backward(const float*, const float*, const float*,
                                  const float*, const float*, float*, float*,
                                  float*, int64_t, int64_t);
template void layer_norm_backward(const double*, const double*, const double*,
                                  const double*, const double*, double*,
                                  double*, double*, int64_t, int64_t);

}  // namespace kbit::cpu
