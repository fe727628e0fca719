// bias_gelu (autograd/ops_nn.cpp): f64 finite-difference gradient check,
// values and gradients against gelu(x + bias) from existing ops, errors;
// and its kernels (kernels/cpu/bias.h) against the reference loops on odd
// shapes, including one above the OpenMP threshold.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "autograd/ops.h"
#include "kernels/cpu/bias.h"
#include "kernels/ref/bias.h"
#include "support/gradcheck.h"

using namespace kbit;
using kbit::test::check_gradients;
using kbit::test::leaf;

namespace {

// f64 fused op against the f64 composition (std::tanh against the
// exp-based identity): a few ulp of O(1) values.
constexpr double kF64Tol = 1e-12;
// f32 kernels against double references: fast_exp (< 1 ulp) per element,
// and f32 column sums of up to ~4000 O(1) terms for db.
constexpr double kF32Tol = 1e-5;
constexpr double kF32SumTol = 1e-3;

double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::abs(a[i] - b[i]) / (1 + std::abs(b[i])));
  }
  return worst;
}

}  // namespace

TEST_CASE("ops: bias_gelu gradient check (f64)") {
  Tensor x = leaf({3, 4, 5}, 61, 2.0), b = leaf({5}, 62);
  check_gradients(
      [](const std::vector<Tensor>& in) { return bias_gelu(in[0], in[1]); },
      {x, b}, "bias_gelu");
}

TEST_CASE("ops: bias_gelu matches gelu(x + bias)") {
  Tensor x = leaf({7, 9}, 63, 3.0), b = leaf({9}, 64);
  Tensor w = leaf({7, 9}, 65);
  w.set_requires_grad(false);
  backward(sum(bias_gelu(x, b) * w));
  std::vector<double> gx = x.grad().to_vector<double>();
  std::vector<double> gb = b.grad().to_vector<double>();
  x.zero_grad();
  b.zero_grad();
  Tensor naive = gelu(x + b);
  backward(sum(naive * w));
  CHECK(max_diff(bias_gelu(x, b).to_vector<double>(),
                 naive.to_vector<double>()) <= kF64Tol);
  CHECK(max_diff(gx, x.grad().to_vector<double>()) <= kF64Tol);
  CHECK(max_diff(gb, b.grad().to_vector<double>()) <= kF64Tol);
}

TEST_CASE("ops: bias_gelu errors") {
  CHECK_THROWS_WITH_AS(bias_gelu(Tensor::zeros({2, 3}), Tensor::zeros({4})),
                       doctest::Contains("expected x (..., n) and bias (n)"),
                       Error);
  CHECK_THROWS_WITH_AS(
      bias_gelu(Tensor::zeros({2, 3}), Tensor::zeros({3}, DType::f64)),
      doctest::Contains("one dtype"), Error);
}

TEST_CASE("kernels: bias_gelu f32 matches the reference") {
  for (auto [rows, n] :
       {std::pair<int64_t, int64_t>{1, 1}, {3, 17}, {129, 515}}) {
    CAPTURE(rows);
    CAPTURE(n);
    Philox rng(66);
    std::vector<float> x(static_cast<size_t>(rows * n)), g(x.size());
    std::vector<float> b(static_cast<size_t>(n));
    rng.fill_normal(x.data(), rows * n, 0.0f, 3.0f);
    rng.fill_normal(g.data(), rows * n);
    rng.fill_normal(b.data(), n);
    std::vector<float> y(x.size()), yr(x.size()), dx(x.size()), dxr(x.size());
    std::vector<float> db(b.size()), dbr(b.size());
    cpu::bias_gelu(x.data(), b.data(), y.data(), rows, n);
    ref::bias_gelu(x.data(), b.data(), yr.data(), rows, n);
    cpu::bias_gelu_backward(x.data(), b.data(), g.data(), dx.data(), db.data(),
                            rows, n);
    ref::bias_gelu_backward(x.data(), b.data(), g.data(), dxr.data(),
                            dbr.data(), rows, n);
    auto as_double = [](const std::vector<float>& v) {
      return std::vector<double>(v.begin(), v.end());
    };
    CHECK(max_diff(as_double(y), as_double(yr)) <= kF32Tol);
    CHECK(max_diff(as_double(dx), as_double(dxr)) <= kF32Tol);
    CHECK(max_diff(as_double(db), as_double(dbr)) <= kF32SumTol);
  }
}
