// GEMM on the CPU: C = alpha * op(A) * op(B) + beta * C, row-major.
//
// op(A) is (M, K), op(B) is (K, N), C is (M, N). With trans_a, A is stored
// as (K, M) and op(A) = A^T (likewise B). lda/ldb/ldc are row strides in
// elements. The batched form walks `batch` matrices at element strides
// stride_a/stride_b/stride_c; a stride of 0 shares one matrix across the
// batch (stride_c must not be 0).
#pragma once

#include <cstdint>

namespace kbit::cpu {

struct GemmArgs {
  bool trans_a = false;
  bool trans_b = false;
  int64_t M = 0, N = 0, K = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;
  double alpha = 1.0;
  double beta = 0.0;
};

void gemm(const GemmArgs& g, const float* A, const float* B, float* C);
void gemm(const GemmArgs& g, const double* A, const double* B, double* C);

void gemm_batched(const GemmArgs& g, int64_t batch, const float* A,
                  int64_t stride_a, const float* B, int64_t stride_b, float* C,
                  int64_t stride_c);
void gemm_batched(const GemmArgs& g, int64_t batch, const double* A,
                  int64_t stride_a, const double* B, int64_t stride_b,
                  double* C, int64_t stride_c);

// What backs the GEMMs, for tests and benchmark reports.
struct GemmBackend {
  const char* f32;        // "oneDNN dnnl_sgemm"
  const char* f64;        // "OpenBLAS cblas_dgemm"
  int blas_parallel;      // openblas_get_parallel(): 2 = the OpenMP build
  const char* blas_core;  // openblas_get_corename(): the kernels it chose
};
GemmBackend gemm_backend();

// gemm_batched runs the batch in parallel (one single-threaded GEMM per
// thread) when each matrix has at most this many M * N * K multiply-adds
// and the batch has at least one matrix per thread; otherwise it runs one
// multi-threaded GEMM after the other.
inline constexpr int64_t kBatchParallelMaxMNK = int64_t(1) << 24;

}  // namespace kbit::cpu
