// CPU GEMM: f32 through oneDNN's dnnl_sgemm, f64 through the OpenMP build of
// OpenBLAS. Both run on libgomp, the one thread pool kbit's loops use.
//
// Why oneDNN for f32, called directly. Measured 2026-12-04 00:04-00:20 UTC
// with OMP_NUM_THREADS=2 by a throwaway probe that alternates the libraries
// in one process; GFLOP/s = 2MNK/t, medians of the samples taken while
// other processes used < 0.15 cores. The first column is from a run with
// OpenBLAS as it loads, the others from runs with OPENBLAS_CORETYPE set:
//
//   MxNxK (op)         OpenBLAS   OpenBLAS      dnnl_sgemm  oneDNN matmul
//                      (Prescott) (Cooperlake)              (plain)
//   1024^3               23         209           243          236
//   2048^3               22         214           228          210
//   4096x768x768         46         189           232          184
//   4096x3072x768        40         219           261           95
//   2048x768x256 NT      29         253           300          284
//   2048x1024x256 NT     44         170           247          226
//   2048x256x1024 NT     34         186           195          232
//   768x256x2048 TN      36         193           205          202
//
// - OpenBLAS 0.3.21 does not know this machine's CPU (Xeon family 6 model
//   207, AVX-512) and falls back to its "Prescott" SSE3 kernels: 20-50
//   GFLOP/s. Only OPENBLAS_CORETYPE=Cooperlake (or SkylakeX) in the
//   environment, read when the library loads, gets its AVX-512 kernels,
//   and even then dnnl_sgemm is as fast or faster on every shape above.
//   oneDNN picks its kernels from CPUID itself; on the AVX2 machine of
//   reference/perf-baselines.md it tied OpenBLAS (122-131 GFLOP/s both).
// - dnnl_sgemm takes row-major arguments with leading dimensions exactly like
//   GemmArgs, needs no primitive set-up per shape (the matmul primitive needs
//   a descriptor per shape and was not faster overall: ahead on one shape,
//   far behind on 4096x3072x768), and runs on libgomp.
// - Eigen stays the matrix API for kbit's own loops; for a product of raw
//   strided pointers an Eigen::Map with EIGEN_USE_BLAS would only forward to
//   sgemm_, i.e. to the slow OpenBLAS, and Eigen's own product reaches about
//   0.55-0.6x of the best (perf-baselines.md). So products call the library.
// - f64 is for gradient checks (small shapes); oneDNN has no f64 GEMM, so it
//   goes to OpenBLAS, whose speed does not matter there.
#include "kernels/cpu/gemm.h"

#include <cblas.h>
#include <dnnl.h>
#include <omp.h>

#include <algorithm>
#include <climits>
#include <type_traits>

#include "core/error.h"

namespace kbit::cpu {
namespace {

// Stored widths (row lengths) of A, B and C, the minimum leading dimensions.
int64_t width_a(const GemmArgs& g) {
  return g.trans_a ? g.M : g.K;
}
int64_t width_b(const GemmArgs& g) {
  return g.trans_b ? g.K : g.N;
}

void check_one_pool() {
  // The pthread build of OpenBLAS would start its own worker threads: a
  // second pool fighting libgomp's (perf-baselines.md, pitfalls). It gets
  // loaded when libopenblas.so.0 resolves through the Debian alternatives.
  static const int parallel = openblas_get_parallel();
  KBIT_CHECK(parallel == 2,
             "[gemm] expected the OpenMP build of OpenBLAS "
             "(openblas_get_parallel() == 2), got ",
             parallel,
             "; link openblas-openmp/libopenblas.so.0 with its RUNPATH "
             "(see CMakeLists.txt)");
}

void check(const GemmArgs& g) {
  KBIT_CHECK(g.M >= 0 && g.N >= 0 && g.K >= 0,
             "[gemm] expected non-negative sizes, got M ", g.M, ", N ", g.N,
             ", K ", g.K);
  KBIT_CHECK(g.lda >= std::max<int64_t>(1, width_a(g)),
             "[gemm] expected lda >= ", std::max<int64_t>(1, width_a(g)),
             " (trans_a ", g.trans_a, ", M ", g.M, ", K ", g.K, "), got ",
             g.lda);
  KBIT_CHECK(g.ldb >= std::max<int64_t>(1, width_b(g)),
             "[gemm] expected ldb >= ", std::max<int64_t>(1, width_b(g)),
             " (trans_b ", g.trans_b, ", K ", g.K, ", N ", g.N, "), got ",
             g.ldb);
  KBIT_CHECK(g.ldc >= std::max<int64_t>(1, g.N),
             "[gemm] expected ldc >= ", std::max<int64_t>(1, g.N), " (N ", g.N,
             "), got ", g.ldc);
  check_one_pool();
}

// C = beta * C, for K == 0 (beta == 0 writes zeros, whatever C held).
template <typename T>
void scale_c(const GemmArgs& g, T* C) {
  for (int64_t i = 0; i < g.M; ++i) {
    T* c = C + i * g.ldc;
    for (int64_t j = 0; j < g.N; ++j)
      c[j] = g.beta == 0.0 ? T(0) : T(g.beta) * c[j];
  }
}

// The unchecked calls; both return false on a library error. Inside an
// OpenMP parallel region both libraries run single-threaded.
bool call(const GemmArgs& g, const float* A, const float* B, float* C) {
  if (g.K == 0) return scale_c(g, C), true;
  dnnl_status_t s =
      dnnl_sgemm(g.trans_a ? 'T' : 'N', g.trans_b ? 'T' : 'N', g.M, g.N, g.K,
                 float(g.alpha), A, g.lda, B, g.ldb, float(g.beta), C, g.ldc);
  return s == dnnl_success;
}

bool call(const GemmArgs& g, const double* A, const double* B, double* C) {
  if (g.K == 0) return scale_c(g, C), true;
  auto tr = [](bool t) { return t ? CblasTrans : CblasNoTrans; };
  cblas_dgemm(CblasRowMajor, tr(g.trans_a), tr(g.trans_b), int(g.M), int(g.N),
              int(g.K), g.alpha, A, int(g.lda), B, int(g.ldb), g.beta, C,
              int(g.ldc));
  return true;
}

template <typename T>
void check_size(const GemmArgs& g) {
  if constexpr (std::is_same_v<T, double>) {  // cblas takes int sizes
    for (int64_t v : {g.M, g.N, g.K, g.lda, g.ldb, g.ldc}) {
      KBIT_CHECK(v <= INT_MAX,
                 "[gemm] expected f64 sizes and leading "
                 "dimensions <= ",
                 INT_MAX, ", got ", v);
    }
  }
}

template <typename T>
void one(const GemmArgs& g, const T* A, const T* B, T* C) {
  check(g);
  check_size<T>(g);
  if (g.M == 0 || g.N == 0) return;
  KBIT_CHECK(call(g, A, B, C), "[gemm] the GEMM library failed for M ", g.M,
             ", N ", g.N, ", K ", g.K, ", lda ", g.lda, ", ldb ", g.ldb,
             ", ldc ", g.ldc);
}

// Many small matrices: one per thread at a time, each GEMM single-threaded
// (a multi-threaded 128x32x128 GEMM spends more on the fork than on the
// math). Large ones: the library threads each GEMM. Measured on batch 128
// of the attention shapes (bench_gemm and a probe, 2026-12-04, 2 threads):
// 1.5x a loop of threaded GEMMs on a quiet machine (152 against 102 GFLOP/s
// for 128x128x32 NT) and 2.5-4x with other processes on one core. oneDNN's
// batched matmul primitive was 10-20% ahead in a few clean samples; it needs
// a descriptor per shape (TODO if attention GEMMs dominate a profile).
template <typename T>
void batched(const GemmArgs& g, int64_t batch, const T* A, int64_t sa,
             const T* B, int64_t sb, T* C, int64_t sc) {
  check(g);
  check_size<T>(g);
  KBIT_CHECK(batch >= 0, "[gemm_batched] expected batch >= 0, got ", batch);
  KBIT_CHECK(batch <= 1 || sc != 0,
             "[gemm_batched] expected a non-zero stride_c for batch ", batch);
  if (batch == 0 || g.M == 0 || g.N == 0) return;

  const int64_t mnk = g.M * g.N * std::max<int64_t>(g.K, 1);
  const bool per_thread = mnk <= kBatchParallelMaxMNK &&
                          batch >= omp_get_max_threads() && !omp_in_parallel();
  bool ok = true;
  if (per_thread) {
#pragma omp parallel for schedule(static) reduction(&& : ok)
    for (int64_t i = 0; i < batch; ++i) {
      ok = call(g, A + i * sa, B + i * sb, C + i * sc) && ok;
    }
  } else {
    for (int64_t i = 0; i < batch && ok; ++i) {
      ok = call(g, A + i * sa, B + i * sb, C + i * sc);
    }
  }
  KBIT_CHECK(ok, "[gemm_batched] the GEMM library failed for M ", g.M, ", N ",
             g.N, ", K ", g.K, ", batch ", batch);
}

}  // namespace

void gemm(const GemmArgs& g, const float* A, const float* B, float* C) {
  one(g, A, B, C);
}

void gemm(const GemmArgs& g, const double* A, const double* B, double* C) {
  one(g, A, B, C);
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

GemmBackend gemm_backend() {
  return {"oneDNN dnnl_sgemm", "OpenBLAS cblas_dgemm", openblas_get_parallel(),
          openblas_get_corename()};
}

}  // namespace kbit::cpu
