// Gradient checks (f64, central differences) and forward values of sum,
// mean and sum_to.
#include <doctest/doctest.h>

#include "support/gradcheck.h"

using namespace kbit;
using kbit::test::check_gradients;
using kbit::test::leaf;

TEST_CASE("ops: sum and mean forward values over axes") {
  // a (2, 3) = [[0, 1, 2], [3, 4, 5]]
  Tensor a = Tensor::from_vector<float>({0, 1, 2, 3, 4, 5}, {2, 3});
  CHECK(sum(a).shape() == Shape{});
  CHECK(sum(a).item() == 15);
  CHECK(sum(a, {0}).to_vector<float>() == std::vector<float>{3, 5, 7});
  CHECK(sum(a, {1}).to_vector<float>() == std::vector<float>{3, 12});
  CHECK(sum(a, {-1}, true).shape() == Shape{2, 1});
  CHECK(sum(a, {0, 1}, true).shape() == Shape{1, 1});
  CHECK(mean(a).item() == 2.5);
  CHECK(mean(a, {0}).to_vector<float>() == std::vector<float>{1.5, 2.5, 3.5});
  CHECK(mean(a, {-1}, true).to_vector<float>() == std::vector<float>{1, 4});
  // A transposed view (3, 2) sums like its contiguous copy.
  Tensor t = a.transpose_view(0, 1);
  CHECK(sum(t, {1}).to_vector<float>() == std::vector<float>{3, 5, 7});
  // An empty axis sums to zero.
  CHECK(sum(Tensor::zeros({0, 3}), {0}).to_vector<float>() ==
        std::vector<float>{0, 0, 0});
}

TEST_CASE("ops: sum and mean gradcheck over axes, keepdim, negative axes") {
  const std::vector<std::vector<int>> axis_sets = {
      {}, {0}, {1}, {-1}, {0, 2}, {2, 0}, {-3, -2}, {1, 2}};
  for (bool keepdim : {false, true}) {
    for (const auto& axes : axis_sets) {
      std::string what = "axes of size " + std::to_string(axes.size()) +
                         (keepdim ? " keepdim" : "");
      check_gradients(
          [&](const std::vector<Tensor>& in) {
            return sum(in[0], axes, keepdim);
          },
          {leaf({2, 3, 4}, 1)}, "sum " + what);
      check_gradients(
          [&](const std::vector<Tensor>& in) {
            return mean(in[0], axes, keepdim);
          },
          {leaf({2, 3, 4}, 2)}, "mean " + what);
    }
  }
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return mean(permute(in[0], {2, 0, 1}), {0, 2});
      },
      {leaf({2, 3, 4}, 3)}, "mean of a permuted view");
}

TEST_CASE("ops: sum_to is the adjoint of broadcasting") {
  Tensor a = Tensor::from_vector<double>({0, 1, 2, 3, 4, 5}, {2, 3});
  CHECK(sum_to(a, {3}).to_vector<double>() == std::vector<double>{3, 5, 7});
  CHECK(sum_to(a, {2, 1}).to_vector<double>() == std::vector<double>{3, 12});
  CHECK(sum_to(a, {1, 1}).item() == 15);
  CHECK(sum_to(a, {}).item() == 15);
  CHECK(sum_to(a, {2, 3}).storage() == a.storage());  // the identity

  const std::vector<Shape> targets = {{4},       {3, 1},    {1, 4},
                                      {2, 1, 1}, {1, 3, 4}, {}};
  for (const Shape& to : targets) {
    check_gradients(
        [&](const std::vector<Tensor>& in) { return sum_to(in[0], to); },
        {leaf({2, 3, 4}, 4)}, "sum_to " + shape_str(to));
  }
  // <sum_to(x), y> == <x, broadcast(y)>, the defining identity.
  Tensor x = leaf({2, 3, 4}, 5);
  Tensor y = leaf({3, 1}, 6);
  double lhs = sum(mul(sum_to(x, {3, 1}), y)).item();
  double rhs = sum(mul(x, y)).item();
  CHECK(lhs == doctest::Approx(rhs).epsilon(1e-12));
}

TEST_CASE("ops: reductions in chains with reuse") {
  check_gradients(
      [](const std::vector<Tensor>& in) {
        Tensor centered = in[0] - mean(in[0], {-1}, true);
        Tensor var = mean(centered * centered, {-1}, true);
        return centered / sqrt(var + 1e-5);
      },
      {leaf({3, 5}, 7)}, "normalize rows");
}

TEST_CASE("ops: large sums are deterministic and accurate") {
  // 2^17 + 5 elements: past the parallel threshold, an odd size.
  Philox rng(8);
  Tensor x = Tensor::randn({(1 << 17) + 5}, rng);
  std::vector<float> v = x.to_vector<float>();
  double expected = 0;
  for (float f : v) expected += f;
  double s1 = sum(x).item(), s2 = sum(x).item();
  CHECK(s1 == s2);  // bit for bit
  // Double accumulation: only the final rounding to f32 differs (rel 6e-8).
  CHECK(s1 == doctest::Approx(expected).epsilon(1e-6));
}

TEST_CASE("ops: reduction errors name the op and the axes") {
  Tensor a = Tensor::zeros({2, 3});
  CHECK_THROWS_WITH_AS(sum(a, {2}), "[sum] expected an axis in [-2, 2), got 2",
                       Error);
  CHECK_THROWS_WITH_AS(mean(a, {1, -1}), "[mean] axis -1 given twice", Error);
  CHECK_THROWS_WITH_AS(
      sum_to(a, {2}),
      "[sum_to] expected a shape that broadcasts to (2, 3), got (2,)", Error);
  CHECK_THROWS_WITH_AS(sum(Tensor::zeros({2}, DType::i64)),
                       "[sum] expected dtype f32 or f64, got i64", Error);
}
