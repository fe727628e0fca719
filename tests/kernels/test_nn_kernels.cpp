// Fast nn kernels (kernels/cpu) against their reference loops
// (kernels/ref) in f32 on random odd shapes, including shapes above the
// OpenMP threshold; and the error bound of fast_exp.
#include <doctest/doctest.h>

#include <omp.h>

#include <cfloat>
#include <cmath>
#include <vector>

#include "core/philox.h"
#include "kernels/cpu/bias.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/dropout.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/fast_exp.h"
#include "kernels/cpu/layernorm.h"
#include "kernels/cpu/softmax.h"
#include "kernels/ref/bias.h"
#include "kernels/ref/cross_entropy.h"
#include "kernels/ref/dropout.h"
#include "kernels/ref/embedding.h"
#include "kernels/ref/layernorm.h"
#include "kernels/ref/softmax.h"

using namespace kbit;

namespace {

// fast_exp against exp in double over [-87, 88]: measured 0.65 FLT_EPSILON
// (7.7e-8); the bound leaves room for another compiler's rounding.
constexpr double kFastExpRelTol = 1.5 * FLT_EPSILON;
// f32 kernels against double references: a few ulp from fast_exp plus f32
// sums over rows of up to ~1000 elements (errors seen: ~1e-7 to 1e-6).
constexpr double kF32Atol = 1e-5;
constexpr double kF32Rtol = 1e-5;
// Sums over many rows (column sums, layer-norm dweight/dbias) grow with the
// row count; values are O(sqrt(rows)) here.
constexpr double kF32SumAtol = 1e-4;

std::vector<float> random_vec(int64_t n, uint64_t seed, float lo = -3,
                              float hi = 3) {
  std::vector<float> v(static_cast<size_t>(n));
  Philox rng(seed);
  rng.fill_uniform(v.data(), n, lo, hi);
  return v;
}

void check_close(const std::vector<float>& got, const std::vector<float>& want,
                 const char* what, double atol = kF32Atol,
                 double rtol = kF32Rtol) {
  REQUIRE(got.size() == want.size());
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double tol = atol + rtol * std::abs(double(want[i]));
    if (!(std::abs(double(got[i]) - want[i]) <= tol)) {
      if (bad++ == 0) first = i;
    }
  }
  CHECK_MESSAGE(bad == 0, what, ": ", bad, " of ", got.size(),
                " elements differ; first at ", first, ": got ", got[first],
                ", want ", want[first]);
}

struct Split {
  int64_t outer, n, inner;
};

}  // namespace

TEST_CASE("kernels: nn fast_exp error bound") {
  double worst = 0;
  for (double x = -87.0; x <= 88.0; x += 0.000731) {
    double want = std::exp(double(float(x)));
    double got = cpu::fast_exp(float(x));
    worst = std::max(worst, std::abs(got - want) / want);
  }
  CHECK(worst <= kFastExpRelTol);
  CHECK(cpu::fast_exp(0.0f) == 1.0f);
  CHECK(cpu::fast_exp(-1000.0f) == 0.0f);
  CHECK(cpu::fast_exp(-INFINITY) == 0.0f);
  CHECK(std::isnan(cpu::fast_exp(NAN)));
  CHECK(std::isfinite(cpu::fast_exp(1000.0f)));
}

TEST_CASE("kernels: nn softmax and log_softmax match the reference") {
  for (Split s : {Split{7, 33, 1}, Split{3, 17, 5}, Split{1, 1, 9},
                  Split{64, 1031, 1}, Split{5, 13, 1031}}) {
    int64_t total = s.outer * s.n * s.inner;
    std::vector<float> x = random_vec(total, 1, -20, 20);
    std::vector<float> g = random_vec(total, 2);
    for (bool log : {false, true}) {
      CAPTURE(s.outer);
      CAPTURE(s.n);
      CAPTURE(s.inner);
      CAPTURE(log);
      std::vector<float> y(x.size()), yr(x.size()), dx(x.size()), dxr(x.size());
      cpu::softmax(x.data(), y.data(), s.outer, s.n, s.inner, log);
      ref::softmax(x.data(), yr.data(), s.outer, s.n, s.inner, log);
      check_close(y, yr, "softmax forward");
      cpu::softmax_backward(yr.data(), g.data(), dx.data(), s.outer, s.n,
                            s.inner, log);
      ref::softmax_backward(yr.data(), g.data(), dxr.data(), s.outer, s.n,
                            s.inner, log);
      check_close(dx, dxr, "softmax backward");
    }
  }
}

TEST_CASE("kernels: nn cross_entropy matches the reference") {
  for (auto [N, C] : {std::pair<int64_t, int64_t>{9, 11}, {37, 257}}) {
    std::vector<float> x = random_vec(N * C, 3, -8, 8);
    std::vector<int32_t> t(static_cast<size_t>(N));
    for (int64_t r = 0; r < N; ++r) t[size_t(r)] = int32_t((r * 7 + 3) % C);
    std::vector<float> lse(static_cast<size_t>(N)),
        lser(static_cast<size_t>(N));
    double loss = cpu::cross_entropy(x.data(), t.data(), lse.data(), N, C);
    double lossr = ref::cross_entropy(x.data(), t.data(), lser.data(), N, C);
    CHECK(std::abs(loss - lossr) <= kF32Atol + kF32Rtol * std::abs(lossr));
    check_close(lse, lser, "cross_entropy lse");
    std::vector<float> d(x.size()), dr(x.size());
    cpu::cross_entropy_backward(x.data(), t.data(), lser.data(), 0.25, d.data(),
                                N, C);
    ref::cross_entropy_backward(x.data(), t.data(), lser.data(), 0.25,
                                dr.data(), N, C);
    check_close(d, dr, "cross_entropy backward");
  }
}

TEST_CASE("kernels: nn layer_norm matches the reference") {
  for (auto [R, C] : {std::pair<int64_t, int64_t>{13, 7}, {129, 301}}) {
    std::vector<float> x = random_vec(R * C, 4, -2, 5);
    std::vector<float> w = random_vec(C, 5), b = random_vec(C, 6);
    std::vector<float> g = random_vec(R * C, 7);
    for (bool affine : {true, false}) {
      CAPTURE(R);
      CAPTURE(C);
      CAPTURE(affine);
      const float* wp = affine ? w.data() : nullptr;
      const float* bp = affine ? b.data() : nullptr;
      std::vector<float> y(x.size()), yr(x.size()), m(static_cast<size_t>(R)),
          mr(static_cast<size_t>(R)), rs(static_cast<size_t>(R)),
          rsr(static_cast<size_t>(R));
      cpu::layer_norm(x.data(), wp, bp, y.data(), m.data(), rs.data(), R, C,
                      1e-5);
      ref::layer_norm(x.data(), wp, bp, yr.data(), mr.data(), rsr.data(), R, C,
                      1e-5);
      check_close(y, yr, "layer_norm forward");
      check_close(m, mr, "layer_norm mean");
      check_close(rs, rsr, "layer_norm rstd");
      std::vector<float> dx(x.size()), dxr(x.size()),
          dw(static_cast<size_t>(C)), dwr(static_cast<size_t>(C)),
          db(static_cast<size_t>(C)), dbr(static_cast<size_t>(C));
      cpu::layer_norm_backward(x.data(), wp, mr.data(), rsr.data(), g.data(),
                               dx.data(), dw.data(), db.data(), R, C);
      ref::layer_norm_backward(x.data(), wp, mr.data(), rsr.data(), g.data(),
                               dxr.data(), dwr.data(), dbr.data(), R, C);
      check_close(dx, dxr, "layer_norm dx");
      check_close(dw, dwr, "layer_norm dweight", kF32SumAtol);
      check_close(db, dbr, "layer_norm dbias", kF32SumAtol);
    }
  }
}

struct EmbeddingCase {
  int64_t V, C, n;
};

TEST_CASE("kernels: nn embedding matches the reference") {
  for (auto [V, C, n] :
       {EmbeddingCase{5, 3, 17}, EmbeddingCase{31, 67, 1001}}) {
    std::vector<float> w = random_vec(V * C, 8), g = random_vec(n * C, 9);
    std::vector<int64_t> idx(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) idx[size_t(i)] = (i * i + 1) % V;
    std::vector<float> y(size_t(n * C)), yr(y.size());
    cpu::embedding(w.data(), idx.data(), y.data(), n, C);
    ref::embedding(w.data(), idx.data(), yr.data(), n, C);
    CHECK(y == yr);
    std::vector<float> dw(w.size(), 0.5f), dwr(w.size(), 0.5f);
    cpu::embedding_backward(g.data(), idx.data(), dw.data(), n, C);
    ref::embedding_backward(g.data(), idx.data(), dwr.data(), n, C);
    CHECK(dw == dwr);  // same additions in the same order
  }
}

TEST_CASE("kernels: nn bias broadcast and column sums match the reference") {
  for (auto [R, n] :
       {std::pair<int64_t, int64_t>{1, 5}, {77, 13}, {1030, 97}}) {
    std::vector<float> b = random_vec(n, 10), g = random_vec(R * n, 11);
    std::vector<float> y(size_t(R * n)), yr(y.size());
    cpu::broadcast_rows(b.data(), y.data(), R, n);
    ref::broadcast_rows(b.data(), yr.data(), R, n);
    CHECK(y == yr);
    std::vector<float> s(static_cast<size_t>(n)), sr(static_cast<size_t>(n));
    cpu::column_sums(g.data(), s.data(), R, n);
    ref::column_sums(g.data(), sr.data(), R, n);
    check_close(s, sr, "column_sums", kF32SumAtol);
  }
}

TEST_CASE("kernels: nn dropout matches the reference stream") {
  for (auto [n, offset] :
       {std::pair<int64_t, uint64_t>{13, 3}, {100, 61}, {40001, 6}}) {
    std::vector<float> x = random_vec(n, 12), g = random_vec(n, 13);
    std::vector<float> y(static_cast<size_t>(n)), yr(static_cast<size_t>(n)),
        dx(static_cast<size_t>(n)), dxr(static_cast<size_t>(n));
    std::vector<uint8_t> k(static_cast<size_t>(n)), kr(static_cast<size_t>(n));
    cpu::dropout(x.data(), y.data(), k.data(), n, 0.3, 99, offset);
    ref::dropout(x.data(), yr.data(), kr.data(), n, 0.3, 99, offset);
    CHECK(k == kr);
    check_close(y, yr, "dropout forward");
    cpu::dropout_backward(g.data(), k.data(), dx.data(), n, 0.3);
    ref::dropout_backward(g.data(), kr.data(), dxr.data(), n, 0.3);
    check_close(dx, dxr, "dropout backward");
    if (n > 10000) {  // the kept fraction is 0.7 within 5 sigma (0.011)
      double kept = 0;
      for (uint8_t v : k) kept += v;
      CHECK(std::abs(kept / double(n) - 0.7) < 0.011);
    }
  }
}

TEST_CASE("kernels: nn row reductions do not depend on the thread count") {
  // Fixed row chunks: 1 and 3 threads give the same bits.
  int64_t R = 1500, C = 67;  // R * C above the OpenMP threshold
  std::vector<float> x = random_vec(R * C, 14), g = random_vec(R * C, 15);
  std::vector<float> w = random_vec(C, 16), m(static_cast<size_t>(R)),
                     rs(static_cast<size_t>(R)), y(x.size());
  cpu::layer_norm(x.data(), w.data(), w.data(), y.data(), m.data(), rs.data(),
                  R, C, 1e-5);
  auto run = [&](int threads) {
    int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    std::vector<float> dx(x.size()), out(static_cast<size_t>(3 * C));
    cpu::layer_norm_backward(x.data(), w.data(), m.data(), rs.data(), g.data(),
                             dx.data(), out.data(), out.data() + C, R, C);
    cpu::column_sums(g.data(), out.data() + 2 * C, R, C);
    omp_set_num_threads(saved);
    return out;
  };
  CHECK(run(1) == run(3));
}
