// Central finite-difference gradient checks in f64.
//
// check_gradients(f, inputs) projects f's output onto fixed random weights w
// (L = sum(f(x) * w)), backpropagates w through the recorded graph, and
// compares every input's gradient with (L(x + h) - L(x - h)) / 2h, computed
// in plain double arithmetic. It needs nothing but the op under test.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "autograd/ops.h"

namespace kbit::test {

// Step h: f64 has 53 bits; h = 1e-6 leaves truncation error O(h^2) ~ 1e-12
// and rounding error O(eps/h) ~ 1e-10, both far below the tolerances.
constexpr double kGradStep = 1e-6;
// Agreement required between analytic and numeric f64 gradients.
constexpr double kGradAtol = 1e-6;
constexpr double kGradRtol = 1e-5;

using TensorFn = std::function<Tensor(const std::vector<Tensor>&)>;

inline double project(const Tensor& out, const std::vector<double>& w) {
  std::vector<double> v = out.to_vector<double>();
  double s = 0;
  for (size_t i = 0; i < v.size(); ++i) s += v[i] * w[i];
  return s;
}

// Inputs must be f64 tensors; those with requires_grad are checked.
inline void check_gradients(const TensorFn& f, std::vector<Tensor> inputs,
                            const std::string& what, uint64_t seed = 7,
                            double atol = kGradAtol, double rtol = kGradRtol) {
  for (Tensor& t : inputs) {
    REQUIRE_MESSAGE(t.dtype() == DType::f64, what, ": inputs must be f64");
    t.zero_grad();
  }
  Tensor out = f(inputs);
  Philox rng(seed);
  Tensor w = Tensor::randn(out.shape(), rng, DType::f64);
  std::vector<double> wv = w.to_vector<double>();
  backward(out, w);

  NoGradGuard no_grad;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& x = inputs[k];
    if (!x.requires_grad()) continue;
    REQUIRE_MESSAGE(x.grad().defined(), what, ": input ", k, " got no grad");
    std::vector<double> analytic = x.grad().to_vector<double>();
    REQUIRE_MESSAGE(x.is_contiguous(), what, ": inputs must be contiguous");
    double* p = x.data<double>();
    for (int64_t i = 0; i < x.numel(); ++i) {
      double saved = p[i];
      p[i] = saved + kGradStep;
      double up = project(f(inputs), wv);
      p[i] = saved - kGradStep;
      double down = project(f(inputs), wv);
      p[i] = saved;
      double numeric = (up - down) / (2 * kGradStep);
      double a = analytic[size_t(i)];
      CHECK_MESSAGE(std::abs(a - numeric) <= atol + rtol * std::abs(numeric),
                    what, ": input ", k, " element ", i, " analytic ", a,
                    " numeric ", numeric);
    }
  }
}

// An f64 leaf of the given shape with N(0, 1) values that requires grad.
inline Tensor leaf(const Shape& shape, uint64_t seed, double scale = 1.0) {
  Philox rng(seed);
  Tensor t = Tensor::randn(shape, rng, DType::f64, 0.0, scale);
  t.set_requires_grad(true);
  return t;
}

}  // namespace kbit::test
