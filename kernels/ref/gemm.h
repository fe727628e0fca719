// Reference GEMM: the triple loop, accumulating in double. The oracle of
// kernels/cpu/gemm.h (same arguments and layout rules).
#pragma once

#include "kernels/cpu/gemm.h"

namespace kbit::ref {

template <typename T>
void gemm(const cpu::GemmArgs& g, const T* A, const T* B, T* C) {
  for (int64_t i = 0; i < g.M; ++i) {
    for (int64_t j = 0; j < g.N; ++j) {
      double acc = 0;
      for (int64_t k = 0; k < g.K; ++k) {
        double a = g.trans_a ? A[k * g.lda + i] : A[i * g.lda + k];
        double b = g.trans_b ? B[j * g.ldb + k] : B[k * g.ldb + j];
        acc += a * b;
      }
      T& c = C[i * g.ldc + j];
      c = T(g.alpha * acc + (g.beta == 0.0 ? 0.0 : g.beta * double(c)));
    }
  }
}

}  // namespace kbit::ref
