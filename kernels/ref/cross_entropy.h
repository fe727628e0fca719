// Reference cross-entropy: plain loops in double. The oracle of
// kernels/cpu/cross_entropy.h (same arguments).
#pragma once

#include <cmath>
#include <cstdint>

namespace kbit::ref {

template <typename T, typename I>
double cross_entropy(const T* logits, const I* targets, T* lse, int64_t N,
                     int64_t C) {
  double total = 0;
  for (int64_t r = 0; r < N; ++r) {
    const T* x = logits + r * C;
    double m = -INFINITY;
    for (int64_t j = 0; j < C; ++j) m = std::fmax(m, x[j]);
    double s = 0;
    for (int64_t j = 0; j < C; ++j) s += std::exp(x[j] - m);
    double l = m + std::log(s);
    lse[r] = T(l);
    total += l - x[targets[r]];
  }
  return N > 0 ? total / double(N) : 0.0;
}

template <typename T, typename I>
void cross_entropy_backward(const T* logits, const I* targets, const T* lse,
                            double scale, T* dlogits, int64_t N, int64_t C) {
  for (int64_t r = 0; r < N; ++r) {
    for (int64_t j = 0; j < C; ++j) {
      double p = std::exp(double(logits[r * C + j]) - lse[r]);
      dlogits[r * C + j] = T(scale * (p - (j == targets[r] ? 1.0 : 0.0)));
    }
  }
}

}  // namespace kbit::ref
