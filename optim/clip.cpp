#include "optim/clip.h"

#include <cmath>

namespace kbit {
namespace {

// Elements below which one thread does the loop (the fork costs more).
constexpr int64_t kParallelThreshold = int64_t(1) << 15;
// Independent partial sums per thread: lets the compiler vectorize a double
// reduction without reassociating (no -ffast-math).
constexpr int kLanes = 8;

template <typename T>
double sum_squares(const T* x, int64_t n) {
  int64_t blocks = n / kLanes;
  double total = 0;
#pragma omp parallel reduction(+ : total) if (n > kParallelThreshold)
  {
    double acc[kLanes] = {};  // one vector register of partial sums
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      for (int k = 0; k < kLanes; ++k) {
        double v = double(x[b * kLanes + k]);
        acc[k] += v * v;
      }
    }
    for (int k = 0; k < kLanes; ++k) total += acc[k];
  }
  for (int64_t i = blocks * kLanes; i < n; ++i) {
    total += double(x[i]) * double(x[i]);
  }
  return total;
}

template <typename T>
void scale_in_place(T* x, int64_t n, T factor) {
#pragma omp parallel for if (n > kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) x[i] *= factor;
}

}  // namespace

double global_grad_norm(const std::vector<Tensor>& grads) {
  double total = 0;
  for (const Tensor& g : grads) {
    Tensor c = g.contiguous();
    dispatch_float(c.dtype(), "grad_norm", [&](auto* tp) {
      using T = std::remove_pointer_t<decltype(tp)>;
      total += sum_squares(c.data<T>(), c.numel());
    });
  }
  return std::sqrt(total);
}

double clip_grad_norm(const std::vector<Tensor>& grads, double max_norm,
                      double norm) {
  KBIT_CHECK(max_norm > 0, "[clip_grad_norm] expected max_norm > 0, got ",
             max_norm);
  if (!(norm > max_norm)) return 1.0;
  double factor = max_norm / norm;
  for (const Tensor& g : grads) {
    KBIT_CHECK(g.is_contiguous(),
               "[clip_grad_norm] expected contiguous gradients, got strides ",
               shape_str(g.strides()), " for shape ", shape_str(g.shape()));
    dispatch_float(g.dtype(), "clip_grad_norm", [&](auto* tp) {
      using T = std::remove_pointer_t<decltype(tp)>;
      scale_in_place(g.data<T>(), g.numel(), T(factor));
    });
  }
  return factor;
}

}  // namespace kbit
