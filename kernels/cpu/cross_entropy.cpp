// Cross-entropy kernels: one log-sum-exp per row forward, softmax minus
// one-hot backward; rows go to OpenMP threads above the size threshold.
#include "kernels/cpu/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/fast_exp.h"
#include "kernels/cpu/nn_common.h"

namespace kbit::cpu {
namespace {

// log(sum(exp(x))) of one row x (C), with the maximum subtracted.
template <typename T>
T log_sum_exp(const T* x, int64_t C) {
  T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < C; ++j) m = m > x[j] ? m : x[j];
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < C; ++j) s += exp_of(x[j] - m);
  return m + std::log(s);
}

}  // namespace

template <typename T, typename I>
double cross_entropy(const T* logits, const I* targets, T* lse, int64_t N,
                     int64_t C) {
  // Row losses are kept and summed in order so the result is the same for
  // any number of threads.
  std::vector<double> loss(size_t(std::max<int64_t>(N, 0)));
#pragma omp parallel for if (N * C >= kParallelMinElements) schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    const T* x = logits + r * C;
    lse[r] = log_sum_exp(x, C);
    loss[size_t(r)] = double(lse[r]) - double(x[targets[r]]);
  }
  double total = 0;
  for (double l : loss) total += l;
  return N > 0 ? total / double(N) : 0.0;
}

template <typename T, typename I>
void cross_entropy_backward(const T* logits, const I* targets, const T* lse,
                            double scale, T* dlogits, int64_t N, int64_t C) {
  T s = T(scale);
#pragma omp parallel for if (N * C >= kParallelMinElements) schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    const T* x = logits + r * C;
    T* d = dlogits + r * C;
    T l = lse[r];
#pragma omp simd
    for (int64_t j = 0; j < C; ++j) d[j] = exp_of(x[j] - l) * s;
    d[targets[r]] -= s;
  }
}

#define KBIT_CE_INSTANTIATE(T, I)                                            \
  template double cross_entropy(const T*, const I*, T*, int64_t, int64_t);   \
  template void cross_entropy_backward(const T*, const I*, const T*, double, \
                                       T*, int64_t, int64_t);
KBIT_CE_INSTANTIATE(float, int32_t)
KBIT_CE_INSTANTIATE(float, int64_t)
KBIT_CE_INSTANTIATE(double, int32_t)
KBIT_CE_INSTANTIATE(double, int64_t)
#undef KBIT_CE_INSTANTIATE

}  // namespace kbit::cpu
