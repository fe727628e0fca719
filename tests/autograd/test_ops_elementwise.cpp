// Gradient checks (f64, central differences) and forward values of the
// elementwise ops: broadcasting binary ops, scalar ops, unary maps.
#include <doctest/doctest.h>

#include <cmath>

#include "support/gradcheck.h"

using namespace kbit;
using kbit::test::check_gradients;
using kbit::test::leaf;

namespace {

// An f64 leaf with values in [lo, hi]: keeps log, sqrt, pow and division
// inside their domains and away from their poles.
Tensor range_leaf(const Shape& shape, uint64_t seed, double lo, double hi) {
  Philox rng(seed);
  Tensor t = Tensor::rand(shape, rng, DType::f64, lo, hi);
  t.set_requires_grad(true);
  return t;
}

// An N(0, 1) leaf with every |value| >= margin: finite differences of relu
// never straddle its kink at 0.
Tensor leaf_off_zero(const Shape& shape, uint64_t seed, double margin = 0.1) {
  Tensor t = leaf(shape, seed);
  double* p = t.data<double>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (std::abs(p[i]) < margin)
      p[i] = p[i] < 0 ? p[i] - margin : p[i] + margin;
  }
  return t;
}

using BinaryFn = Tensor (*)(const Tensor&, const Tensor&);
struct NamedBinary {
  const char* name;
  BinaryFn fn;
};
const NamedBinary kBinaryOps[] = {
    {"add", add}, {"sub", sub}, {"mul", mul}, {"div", div}};

// Gradcheck of every binary op on a (shape_a) and b (shape_b); b is kept
// in [0.5, 2] so div is smooth.
void check_binary_ops(const Shape& shape_a, const Shape& shape_b) {
  for (const NamedBinary& op : kBinaryOps) {
    std::string what = std::string(op.name) + " " + shape_str(shape_a) +
                       " with " + shape_str(shape_b);
    check_gradients(
        [&](const std::vector<Tensor>& in) { return op.fn(in[0], in[1]); },
        {leaf(shape_a, 1), range_leaf(shape_b, 2, 0.5, 2.0)}, what);
  }
}

}  // namespace

TEST_CASE("ops: add, sub, mul, div forward values broadcast like numpy") {
  Tensor a = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::from_vector<float>({10, 20, 30}, {3});
  Tensor c = Tensor::from_vector<float>({2, 4}, {2, 1});
  CHECK((a + b).to_vector<float>() ==
        std::vector<float>{11, 22, 33, 14, 25, 36});
  CHECK((b - a).to_vector<float>() == std::vector<float>{9, 18, 27, 6, 15, 24});
  CHECK((a * c).to_vector<float>() == std::vector<float>{2, 4, 6, 16, 20, 24});
  CHECK((a / c).to_vector<float>() ==
        std::vector<float>{0.5f, 1, 1.5f, 1, 1.25f, 1.5f});
  Tensor outer = mul(c, b);  // (2, 1) * (3) -> (2, 3)
  CHECK(outer.shape() == Shape{2, 3});
  CHECK(outer.to_vector<float>() ==
        std::vector<float>{20, 40, 60, 40, 80, 120});
  Tensor s = Tensor::from_vector<float>({3}, {});  // a 0-d scalar
  CHECK((a - s).to_vector<float>() == std::vector<float>{-2, -1, 0, 1, 2, 3});
  CHECK((s / a).at({1, 2}) == doctest::Approx(0.5));
}

TEST_CASE("ops: binary ops gradcheck on equal, row and scalar shapes") {
  check_binary_ops({3, 4}, {3, 4});
  check_binary_ops({5, 3}, {3});  // bias (C) onto (N, C)
  check_binary_ops({4, 3}, {4, 1});
  check_binary_ops({2, 3}, {});
  check_binary_ops({1}, {2, 3});
}

TEST_CASE("ops: binary ops gradcheck broadcasting (3,1,4) with (2,1)") {
  check_binary_ops({3, 1, 4}, {2, 1});
  check_binary_ops({2, 1}, {3, 1, 4});
}

TEST_CASE("ops: binary ops accept non-contiguous views") {
  // a^T (3, 4) from a leaf (4, 3); b^T (4, 1)^T = (1, 4) broadcasts.
  for (const NamedBinary& op : kBinaryOps) {
    check_gradients(
        [&](const std::vector<Tensor>& in) {
          return op.fn(transpose(in[0], 0, 1), transpose(in[1], 0, 1));
        },
        {leaf({4, 3}, 3), range_leaf({4, 1}, 4, 0.5, 2.0)},
        std::string(op.name) + " of transposed views");
    check_gradients(
        [&](const std::vector<Tensor>& in) {
          return op.fn(slice(in[0], 1, 1, 4), in[1]);
        },
        {leaf({3, 5}, 5), range_leaf({3, 3}, 6, 0.5, 2.0)},
        std::string(op.name) + " of a sliced view");
  }
}

TEST_CASE("ops: an input used twice sums both gradients") {
  Tensor x = leaf({2, 3}, 11);
  Tensor y = mul(x, x);
  backward(sum(y));
  std::vector<double> xv = x.to_vector<double>();
  std::vector<double> gv = x.grad().to_vector<double>();
  for (size_t i = 0; i < xv.size(); ++i)
    CHECK(gv[i] == doctest::Approx(2 * xv[i]));

  check_gradients(
      [](const std::vector<Tensor>& in) {
        Tensor h = tanh(in[0] * in[1] + in[0]);
        return exp(h) / (2.0 + h * h) - in[1] * 3.0;
      },
      {leaf({3, 4}, 12), leaf({4}, 13)}, "chain with reuse");
}

TEST_CASE("ops: scalar ops forward values and gradcheck") {
  Tensor a = Tensor::from_vector<double>({1, 2, 4}, {3});
  CHECK((a + 1.5).to_vector<double>() == std::vector<double>{2.5, 3.5, 5.5});
  CHECK((a - 1.0).to_vector<double>() == std::vector<double>{0, 1, 3});
  CHECK((a * 2.0).to_vector<double>() == std::vector<double>{2, 4, 8});
  CHECK((a / 2.0).to_vector<double>() == std::vector<double>{0.5, 1, 2});
  CHECK((1.0 - a).to_vector<double>() == std::vector<double>{0, -1, -3});
  CHECK((8.0 / a).to_vector<double>() == std::vector<double>{8, 4, 2});
  CHECK(pow_scalar(a, 0.5).to_vector<double>() ==
        std::vector<double>{1, std::sqrt(2.0), 2});

  auto check = [](const char* what, Tensor (*f)(const Tensor&), Tensor x) {
    check_gradients([f](const std::vector<Tensor>& in) { return f(in[0]); },
                    {x}, what);
  };
  check(
      "add_scalar", [](const Tensor& x) { return add_scalar(x, 0.7); },
      leaf({3, 5}, 21));
  check(
      "mul_scalar", [](const Tensor& x) { return mul_scalar(x, -1.3); },
      leaf({3, 5}, 22));
  check(
      "rsub_scalar", [](const Tensor& x) { return rsub_scalar(2.0, x); },
      leaf({3, 5}, 23));
  check(
      "rdiv_scalar", [](const Tensor& x) { return rdiv_scalar(2.0, x); },
      range_leaf({3, 5}, 24, 0.5, 2.0));
  check(
      "pow_scalar 2.5", [](const Tensor& x) { return pow_scalar(x, 2.5); },
      range_leaf({3, 5}, 25, 0.5, 2.0));
  check(
      "pow_scalar 3", [](const Tensor& x) { return pow_scalar(x, 3.0); },
      leaf({3, 5}, 26));
}

TEST_CASE("ops: unary ops gradcheck") {
  auto check = [](const char* what, Tensor (*f)(const Tensor&), Tensor x) {
    check_gradients([f](const std::vector<Tensor>& in) { return f(in[0]); },
                    {x}, what);
  };
  check("neg", neg, leaf({4, 5}, 31));
  check("exp", exp, leaf({4, 5}, 32));
  check("log", log, range_leaf({4, 5}, 33, 0.2, 3.0));
  check("sqrt", sqrt, range_leaf({4, 5}, 34, 0.2, 3.0));
  check("tanh", tanh, leaf({4, 5}, 35));
  check("relu", relu, leaf_off_zero({4, 5}, 36));
  check("gelu", gelu, leaf({4, 5}, 37, 2.0));
  // A transposed view as input takes the copy-then-map path.
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return gelu(transpose(in[0], 0, 1));
      },
      {leaf({3, 4}, 38)}, "gelu of a transposed view");
}

TEST_CASE("ops: unary forward values") {
  Tensor x = Tensor::from_vector<double>({-2, -0.5, 0, 0.5, 2}, {5});
  CHECK(relu(x).to_vector<double>() == std::vector<double>{0, 0, 0, 0.5, 2});
  CHECK(std::isnan(relu(Tensor::full({1}, NAN)).item()));  // not hidden
  CHECK(neg(x).at({0}) == 2);
  CHECK(exp(x).at({4}) == doctest::Approx(std::exp(2.0)));
  CHECK(tanh(x).at({1}) == doctest::Approx(std::tanh(-0.5)));
  // gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) at x = 2 and
  // x = -0.5, evaluated from the formula in Python's math module.
  CHECK(gelu(x).at({4}) == doctest::Approx(1.954597694087775).epsilon(1e-12));
  CHECK(gelu(x).at({1}) ==
        doctest::Approx(-0.15428599017485606).epsilon(1e-12));
  CHECK(gelu(x).at({2}) == 0);
  // Far tails: no overflow to inf or nan; the limits 0 and x, slopes 0
  // and 1 (within 1e-30, the clamped exponential's floor).
  Tensor tl = leaf({2}, 39);
  tl.data<double>()[0] = -30;
  tl.data<double>()[1] = 30;
  Tensor gt = gelu(tl);
  CHECK(std::abs(gt.at({0})) < 1e-30);
  CHECK(gt.at({1}) == 30);
  backward(sum(gt));
  CHECK(std::abs(tl.grad().at({0})) < 1e-30);
  CHECK(tl.grad().at({1}) == 1);
  Tensor tf = gelu(Tensor::from_vector<float>({-30, 30}, {2}));
  CHECK(std::abs(tf.at({0})) < 1e-30);
  CHECK(tf.at({1}) == 30);
  Tensor p = Tensor::from_vector<double>({1, 4}, {2});
  CHECK(log(p).at({1}) == doctest::Approx(std::log(4.0)));
  CHECK(sqrt(p).to_vector<double>() == std::vector<double>{1, 2});
}

TEST_CASE(
    "ops: elementwise results are contiguous and record only when needed") {
  Tensor a = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor t = a.transpose_view(0, 1);
  Tensor r = exp(t);
  CHECK(r.is_contiguous());
  CHECK(r.shape() == Shape{3, 2});
  CHECK(r.at({2, 1}) == doctest::Approx(std::exp(6.0f)));
  CHECK(r.grad_fn() == nullptr);
  Tensor w = leaf({2, 3}, 41);
  CHECK((w * 2.0).grad_fn() != nullptr);
  NoGradGuard no_grad;
  CHECK((w * 2.0).grad_fn() == nullptr);
  CHECK_FALSE((w + w).requires_grad());
}

TEST_CASE("ops: elementwise errors name the op, shapes and dtypes") {
  Tensor a = Tensor::zeros({4, 8});
  Tensor b = Tensor::zeros({6, 3});
  CHECK_THROWS_WITH_AS(add(a, b),
                       "[add] expected broadcastable shapes, got (4, 8) and "
                       "(6, 3)",
                       Error);
  CHECK_THROWS_WITH_AS(mul(a, Tensor::zeros({4, 8}, DType::f64)),
                       "[mul] expected inputs of one dtype, got f32 and f64",
                       Error);
  CHECK_THROWS_WITH_AS(exp(Tensor::zeros({2}, DType::i32)),
                       "[exp] expected dtype f32 or f64, got i32", Error);
  CHECK_THROWS_WITH_AS(sub(Tensor(), a),
                       "[sub] expected two tensors, got an undefined one",
                       Error);
}
