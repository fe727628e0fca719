// CPU GEMM backed by the OpenMP build of OpenBLAS, so GEMMs and kbit's own
// loops share one libgomp pool (reference/perf-baselines.md, pitfalls).
#include "kernels/cpu/gemm.h"

#include <cblas.h>

#include "core/error.h"

namespace kbit::cpu {
namespace {

void check(const GemmArgs& g) {
  KBIT_CHECK(g.M >= 0 && g.N >= 0 && g.K >= 0,
             "[gemm] expected non-negative sizes, got M ", g.M, ", N ", g.N,
             ", K ", g.K);
}

CBLAS_TRANSPOSE tr(bool t) {
  return t ? CblasTrans : CblasNoTrans;
}

}  // namespace

void gemm(const GemmArgs& g, const float* A, const float* B, float* C) {
  check(g);
  if (g.M == 0 || g.N == 0) return;
  cblas_sgemm(CblasRowMajor, tr(g.trans_a), tr(g.trans_b), int(g.M), int(g.N),
              int(g.K), float(g.alpha), A, int(g.lda), B, int(g.ldb),
              float(g.beta), C, int(g.ldc));
}

void gemm(const GemmArgs& g, const double* A, const double* B, double* C) {
  check(g);
  if (g.M == 0 || g.N == 0) return;
  cblas_dgemm(CblasRowMajor, tr(g.trans_a), tr(g.trans_b), int(g.M), int(g.N),
              int(g.K), g.alpha, A, int(g.lda), B, int(g.ldb), g.beta, C,
              int(g.ldc));
}

template <typename T>
static void batched(const GemmArgs& g, int64_t batch, const T* A, int64_t sa,
                    const T* B, int64_t sb, T* C, int64_t sc) {
  KBIT_CHECK(batch <= 1 || sc != 0,
             "[gemm_batched] expected a non-zero stride_c for batch ", batch);
  for (int64_t i = 0; i < batch; ++i) {
    gemm(g, A + i * sa, B + i * sb, C + i * sc);
  }
}

void gemm_batched(const GemmArgs& g, int64_t batch, const float* A,
                  int64_t stride_a, const float* B, int64_t stride_b, float* C,
                  int64_t stride_c) {
  batched(g, batch, A, stride_a, B, stride_b, C, stride_c);
}

void gemm_batched(const GemmArgs& g, int64_t batch, const double* A,
                  int64_t stride_a, const double* B, int64_t stride_b,
                  double* C, int64_t stride_c) {
  batched(g, batch, A, stride_a, B, stride_b, C, stride_c);
}

}  // namespace kbit::cpu
