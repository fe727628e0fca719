// kernels/cpu/gemm.h against the reference loop kernels/ref/gemm.h: random
// shapes with odd sizes, all four transpositions, alpha/beta, padded leading
// dimensions, f32 and f64, batches with shared matrices; and the one-pool
// rules (OpenMP OpenBLAS, every libgomp thread working, no extra threads).
#include <doctest/doctest.h>

#include <omp.h>
#include <chrono>
#include <thread>

#include <dirent.h>
#include <strings.h>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/philox.h"
#include "kernels/cpu/gemm.h"
#include "kernels/ref/gemm.h"

using namespace kbit;
using cpu::GemmArgs;

namespace {

// Each C entry is alpha * (a sum of K products) + beta * C. Any summation
// order errs by at most about (K + 2) * eps * (|alpha| sum |a||b| +
// |beta| |c|) (the classical dot-product bound); we allow twice that.
constexpr double kBoundFactor = 2.0;
// Written into C's padding (columns N..ldc-1): the GEMM must leave it alone.
constexpr float kPad = -12345.f;

template <typename T>
std::vector<T> random_vec(Philox& rng, int64_t n) {
  std::vector<T> v(size_t(std::max<int64_t>(n, 1)));
  rng.fill_uniform(v.data(), int64_t(v.size()), T(-1), T(1));
  return v;
}

template <typename T>
std::vector<T> abs_vec(std::vector<T> v) {
  for (T& x : v) x = std::abs(x);
  return v;
}

// One GEMM problem: op(A) (M, K), op(B) (K, N), C (M, N), padded rows.
template <typename T>
struct Problem {
  GemmArgs g;
  std::vector<T> A, B, C;  // C: the input C (NaN when beta == 0)
};

template <typename T>
Problem<T> make_problem(Philox& rng, GemmArgs g, int64_t pad) {
  g.lda = (g.trans_a ? g.M : g.K) + pad;
  g.ldb = (g.trans_b ? g.K : g.N) + pad;
  g.ldc = g.N + pad;
  Problem<T> p{g, {}, {}, {}};
  p.A = random_vec<T>(rng, (g.trans_a ? g.K : g.M) * g.lda);
  p.B = random_vec<T>(rng, (g.trans_b ? g.N : g.K) * g.ldb);
  p.C = random_vec<T>(rng, g.M * g.ldc);
  for (int64_t i = 0; i < g.M; ++i) {
    for (int64_t j = 0; j < g.ldc; ++j) {
      T& c = p.C[i * g.ldc + j];
      if (j >= g.N)
        c = T(kPad);
      else if (g.beta == 0.0)
        c = std::numeric_limits<T>::quiet_NaN();
    }
  }
  return p;
}

// The largest error of `got` against the reference, in units of its bound
// (> 1 fails), and whether C's padding was left alone.
template <typename T>
double error_in_bounds(const Problem<T>& p, const std::vector<T>& got,
                       const T* A, const T* B) {
  const GemmArgs& g = p.g;
  std::vector<T> want = p.C, bound = abs_vec(p.C);
  ref::gemm(g, A, B, want.data());
  GemmArgs ga = g;
  ga.alpha = std::abs(g.alpha);
  ga.beta = std::abs(g.beta);
  std::vector<T> absA = abs_vec(std::vector<T>(A, A + p.A.size()));
  std::vector<T> absB = abs_vec(std::vector<T>(B, B + p.B.size()));
  ref::gemm(ga, absA.data(), absB.data(), bound.data());

  const double eps = std::numeric_limits<T>::epsilon();
  double worst = 0;
  for (int64_t i = 0; i < g.M; ++i) {
    for (int64_t j = 0; j < g.ldc; ++j) {
      const int64_t at = i * g.ldc + j;
      if (j >= g.N) {
        if (got[at] != T(kPad)) return INFINITY;
        continue;
      }
      const double tol =
          kBoundFactor * double(g.K + 2) * eps * double(bound[at]) + 1e-30;
      const double err = std::abs(double(got[at]) - double(want[at])) / tol;
      if (!(err <= worst)) worst = err;  // NaN propagates as a failure
    }
  }
  return worst;
}

template <typename T>
double run_one(const Problem<T>& p) {
  std::vector<T> got = p.C;
  cpu::gemm(p.g, p.A.data(), p.B.data(), got.data());
  return error_in_bounds(p, got, p.A.data(), p.B.data());
}

const int64_t kOddSizes[] = {1, 2, 3, 17, 63, 64, 129};

template <typename T>
void check_random_shapes(uint64_t seed) {
  Philox rng(seed);
  const double alphas[] = {1.0, -0.5, 2.0};
  const double betas[] = {0.0, 1.0, -0.75};
  int n = 0;
  for (int trans = 0; trans < 4; ++trans) {
    for (int rep = 0; rep < 12; ++rep) {
      GemmArgs g;
      g.trans_a = trans & 1;
      g.trans_b = trans & 2;
      auto size = [&] {
        uint32_t r = rng.next_u32();
        return r % 2 ? kOddSizes[(r >> 1) % 7] : int64_t(1 + (r >> 1) % 150);
      };
      g.M = size(), g.N = size(), g.K = size();
      g.alpha = alphas[rng.next_u32() % 3];
      g.beta = betas[rng.next_u32() % 3];
      Problem<T> p = make_problem<T>(rng, g, rng.next_u32() % 2 ? 5 : 0);
      INFO("trans_a ", g.trans_a, " trans_b ", g.trans_b, " M ", g.M, " N ",
           g.N, " K ", g.K, " lda ", p.g.lda, " ldb ", p.g.ldb, " ldc ",
           p.g.ldc, " alpha ", g.alpha, " beta ", g.beta);
      CHECK(run_one(p) <= 1.0);
      ++n;
    }
  }
  CHECK(n == 48);
}

// Busy nanoseconds of every thread of this process (schedstat field 1).
std::map<int, double> thread_cpu_ns() {
  std::map<int, double> out;
  DIR* dir = opendir("/proc/self/task");
  REQUIRE(dir != nullptr);
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(std::string("/proc/self/task/") + e->d_name + "/schedstat");
    double ns = 0;
    if (f >> ns) out[std::stoi(e->d_name)] = ns;
  }
  closedir(dir);
  return out;
}

// How many threads worked at least a quarter as much as the busiest one
// while `work` ran. libgomp's pool is the only source of threads.
template <typename F>
int busy_threads(F work) {
  auto before = thread_cpu_ns();
  work();
  auto after = thread_cpu_ns();
  double most = 0;
  for (auto& [tid, ns] : after) most = std::max(most, ns - before[tid]);
  REQUIRE(most > 0);
  int busy = 0;
  for (auto& [tid, ns] : after) busy += ns - before[tid] >= 0.25 * most;
  return busy;
}

}  // namespace

TEST_CASE("gemm: f32 matches the reference on random odd shapes") {
  check_random_shapes<float>(11);
}

TEST_CASE("gemm: f64 matches the reference on random odd shapes") {
  check_random_shapes<double>(12);
}

TEST_CASE("gemm: the bound can fail (a wrong transposition is caught)") {
  Philox rng(13);
  GemmArgs g{false, false, 17, 17, 17, 0, 0, 0, 1.0, 0.0};
  Problem<float> p = make_problem<float>(rng, g, 0);
  std::vector<float> got = p.C;
  GemmArgs wrong = p.g;
  wrong.trans_b = true;
  cpu::gemm(wrong, p.A.data(), p.B.data(), got.data());
  CHECK(error_in_bounds(p, got, p.A.data(), p.B.data()) > 1.0);
}

TEST_CASE("gemm: K == 0 and beta == 0 ignore C's NaN garbage") {
  Philox rng(14);
  for (int64_t K : {0, 1, 33}) {
    GemmArgs g{true, false, 3, 5, K, 0, 0, 0, 1.5, 0.0};
    Problem<float> p = make_problem<float>(rng, g, 2);
    CAPTURE(K);
    CHECK(run_one(p) <= 1.0);
  }
  GemmArgs g{false, false, 4, 3, 0, 1, 3, 3, 2.0, 0.5};  // K 0: C = beta C
  std::vector<double> C = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  double unused = 0;
  cpu::gemm(g, &unused, &unused, C.data());
  CHECK(C[11] == 6.0);
  cpu::gemm(GemmArgs{false, false, 0, 3, 2, 2, 3, 3, 1.0, 0.0}, &unused,
            &unused, C.data());  // M 0: nothing to do
  CHECK(C[0] == 0.5);
}

TEST_CASE("gemm: batched with shared A or B matches the reference") {
  Philox rng(15);
  // 40x24x33: the parallel-over-batch path; 260x260x260 (> 2^24
  // multiply-adds): one threaded GEMM after the other.
  const int64_t dims[][3] = {{40, 24, 33}, {260, 260, 260}};
  for (auto& d : dims) {
    for (int shared = 0; shared < 3; ++shared) {  // none, A, B
      const int64_t batch = d[0] > 100 ? 2 : 9;
      GemmArgs g{bool(shared & 1), true, d[0], d[1], d[2], 0, 0, 0, 1.0, 0.5};
      Problem<float> p = make_problem<float>(rng, g, 1);
      const int64_t sa = shared == 1 ? 0 : int64_t(p.A.size());
      const int64_t sb = shared == 2 ? 0 : int64_t(p.B.size());
      const int64_t sc = int64_t(p.C.size());
      std::vector<float> A = p.A, B = p.B, C;
      for (int64_t i = 1; i < batch; ++i) {
        if (sa) A.insert(A.end(), p.A.begin(), p.A.end());
        if (sb) B.insert(B.end(), p.B.begin(), p.B.end());
      }
      rng.fill_uniform(A.data(), int64_t(A.size()), -1.f, 1.f);
      rng.fill_uniform(B.data(), int64_t(B.size()), -1.f, 1.f);
      for (int64_t i = 0; i < batch; ++i)
        C.insert(C.end(), p.C.begin(), p.C.end());
      cpu::gemm_batched(p.g, batch, A.data(), sa, B.data(), sb, C.data(), sc);
      CAPTURE(d[0]);
      CAPTURE(shared);
      for (int64_t i = 0; i < batch; ++i) {
        std::vector<float> got(C.begin() + i * sc, C.begin() + (i + 1) * sc);
        CHECK(error_in_bounds(p, got, A.data() + i * sa, B.data() + i * sb) <=
              1.0);
      }
    }
  }
}

TEST_CASE("gemm: batched f64 runs the per-thread path correctly") {
  Philox rng(16);
  GemmArgs g{false, true, 31, 7, 19, 0, 0, 0, -1.0, 0.0};
  Problem<double> p = make_problem<double>(rng, g, 0);
  const int64_t batch = 16, sa = int64_t(p.A.size()), sc = int64_t(p.C.size());
  std::vector<double> A = random_vec<double>(rng, batch * sa);
  std::vector<double> C(size_t(batch * sc), NAN);
  cpu::gemm_batched(p.g, batch, A.data(), sa, p.B.data(), 0, C.data(), sc);
  for (int64_t i = 0; i < batch; ++i) {
    std::vector<double> got(C.begin() + i * sc, C.begin() + (i + 1) * sc);
    CHECK(error_in_bounds(p, got, A.data() + i * sa, p.B.data()) <= 1.0);
  }
}

TEST_CASE("gemm: bad arguments throw with the values") {
  float x[64] = {};
  CHECK_THROWS_WITH_AS(
      cpu::gemm(GemmArgs{false, false, 2, 3, 4, 3, 3, 3}, x, x, x),
      "[gemm] expected lda >= 4 (trans_a 0, M 2, K 4), got 3", Error);
  CHECK_THROWS_WITH_AS(
      cpu::gemm(GemmArgs{false, true, 2, 3, 4, 4, 3, 3}, x, x, x),
      "[gemm] expected ldb >= 4 (trans_b 1, K 4, N 3), got 3", Error);
  CHECK_THROWS_AS(cpu::gemm(GemmArgs{false, false, -1, 3, 4, 4, 3, 3}, x, x, x),
                  Error);
  CHECK_THROWS_WITH_AS(
      cpu::gemm_batched(GemmArgs{false, false, 2, 2, 2, 2, 2, 2}, 2, x, 4, x, 4,
                        x, 0),
      "[gemm_batched] expected a non-zero stride_c for batch 2", Error);
}

TEST_CASE("gemm: one pool (OpenMP OpenBLAS, all libgomp threads, no others)") {
  const cpu::GemmBackend be = cpu::gemm_backend();
  INFO("OpenBLAS core ", be.blas_core);
  REQUIRE(be.blas_parallel == 2);  // 0 sequential, 1 pthreads, 2 OpenMP

  const int threads = omp_get_max_threads();
  Philox rng(17);
  const int64_t n = 512;
  std::vector<float> A = random_vec<float>(rng, n * n), C(size_t(n * n));
  std::vector<double> D = random_vec<double>(rng, n * n), E(size_t(n * n));
  GemmArgs g{false, true, n, n, n, n, n, n, 1.0, 0.0};
  cpu::gemm(g, A.data(), A.data(), C.data());  // start the pool

  // The count can fail: a serial loop (the reference GEMM, about 30 ms)
  // keeps one thread busy while the pool's workers sleep.
  // (Not with OMP_WAIT_POLICY=active: then idle workers spin, by request.)
  const char* wait = std::getenv("OMP_WAIT_POLICY");
  if (wait == nullptr || strcasecmp(wait, "active") != 0) {
    GemmArgs r{false, false, 256, 256, 256, 256, 256, 256, 1.0, 0.0};
    // Let the workers finish spinning after the last GEMM first (libgomp
    // spins a few ms before it sleeps), or their spin counts as busy.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    CHECK(busy_threads([&] { ref::gemm(r, A.data(), A.data(), C.data()); }) ==
          1);
  } else {
    MESSAGE("skipped the serial-loop check: OMP_WAIT_POLICY=active");
  }

  // f32 (oneDNN) and f64 (OpenBLAS) GEMMs each keep every thread busy.
  CHECK(busy_threads([&] {
          for (int i = 0; i < 8; ++i)
            cpu::gemm(g, A.data(), A.data(), C.data());
        }) == threads);
  CHECK(busy_threads([&] {
          for (int i = 0; i < 2; ++i)
            cpu::gemm(g, D.data(), D.data(), E.data());
        }) == threads);

  // The per-thread batched path nests library calls inside a parallel
  // region: they must run single-threaded (no nested teams, no new threads).
  GemmArgs s{false, false, 64, 64, 64, 64, 64, 64, 1.0, 0.0};
  cpu::gemm_batched(s, 64, A.data(), 64 * 64, A.data(), 0, C.data(), 64 * 64);
  CHECK(int(thread_cpu_ns().size()) == threads);
}
