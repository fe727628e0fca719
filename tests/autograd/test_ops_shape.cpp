// Gradient checks (f64, central differences) and view semantics of
// reshape, transpose, permute, slice and concat.
#include <doctest/doctest.h>

#include "support/gradcheck.h"

using namespace kbit;
using kbit::test::check_gradients;
using kbit::test::leaf;

TEST_CASE("ops: reshape views contiguous inputs and copies the others") {
  Tensor a = Tensor::from_vector<float>({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor r = reshape(a, {3, -1});
  CHECK(r.shape() == Shape{3, 2});
  CHECK(r.storage() == a.storage());
  Tensor t = reshape(a.transpose_view(0, 1), {6});
  CHECK(t.storage() != a.storage());
  CHECK(t.to_vector<float>() == std::vector<float>{0, 3, 1, 4, 2, 5});
  CHECK(reshape(a, {-1}).shape() == Shape{6});
  CHECK(reshape(Tensor::zeros({0, 4}), {-1, 2}).shape() == Shape{0, 2});

  check_gradients(
      [](const std::vector<Tensor>& in) {
        return reshape(in[0], {4, -1}) * in[1];
      },
      {leaf({2, 3, 2}, 1), leaf({3}, 2)}, "reshape");
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return reshape(transpose(in[0], 0, 1), {-1});
      },
      {leaf({3, 4}, 3)}, "reshape of a transposed view");
}

TEST_CASE("ops: transpose and permute are views with history") {
  Tensor a = Tensor::from_vector<float>({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor t = transpose(a, 0, -1);
  CHECK(t.shape() == Shape{3, 2});
  CHECK(t.storage() == a.storage());
  CHECK(t.to_vector<float>() == std::vector<float>{0, 3, 1, 4, 2, 5});

  check_gradients(
      [](const std::vector<Tensor>& in) { return transpose(in[0], 0, 2); },
      {leaf({2, 3, 4}, 4)}, "transpose");
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return permute(in[0], {2, -3, 1}) * in[1];
      },
      {leaf({2, 3, 4}, 5), leaf({4, 1, 3}, 6)}, "permute");
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return permute(transpose(in[0], 0, 1), {1, 2, 0});
      },
      {leaf({2, 3, 4}, 7)}, "permute of a transpose");
}

TEST_CASE("ops: slice views and scatters its gradient") {
  Tensor a = Tensor::from_vector<float>({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor s = slice(a, -1, 1, 3);
  CHECK(s.storage() == a.storage());
  CHECK(s.to_vector<float>() == std::vector<float>{1, 2, 4, 5});

  Tensor x = leaf({3, 4}, 8);
  backward(sum(slice(x, 1, 1, 3)));
  CHECK(x.grad().to_vector<double>() ==
        std::vector<double>{0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0});

  check_gradients(
      [](const std::vector<Tensor>& in) { return slice(in[0], 1, 1, 3); },
      {leaf({2, 4, 3}, 9)}, "slice");
  check_gradients(
      [](const std::vector<Tensor>& in) {
        Tensor top = slice(in[0], 0, 0, 2);
        return slice(top, 1, 1, 2) + slice(in[0], 0, 1, 3);  // overlapping
      },
      {leaf({3, 4}, 10)}, "overlapping slices");
}

TEST_CASE("ops: concat copies and slices its gradient") {
  Tensor a = Tensor::from_vector<float>({0, 1, 2, 3}, {2, 2});
  Tensor b = Tensor::from_vector<float>({9, 8}, {2, 1});
  Tensor c = concat({a, b}, 1);
  CHECK(c.shape() == Shape{2, 3});
  CHECK(c.to_vector<float>() == std::vector<float>{0, 1, 9, 2, 3, 8});
  CHECK(concat({a, a.transpose_view(0, 1)}, 0).to_vector<float>() ==
        std::vector<float>{0, 1, 2, 3, 0, 2, 1, 3});

  check_gradients(
      [](const std::vector<Tensor>& in) {
        return concat({in[0], in[1], in[0]}, -1);  // in[0] used twice
      },
      {leaf({2, 3}, 11), leaf({2, 1}, 12)}, "concat on the last axis");
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return concat({transpose(in[0], 0, 1), in[1]}, 0);
      },
      {leaf({3, 2}, 13), leaf({4, 3}, 14)}, "concat on axis 0 of a view");
}

TEST_CASE("ops: shape op errors name the op and the shapes") {
  Tensor a = Tensor::zeros({2, 3});
  CHECK_THROWS_WITH_AS(reshape(a, {4, 2}),
                       "[reshape] cannot reshape (2, 3) (6 elements) to (4, 2)",
                       Error);
  CHECK_THROWS_WITH_AS(
      reshape(a, {4, -1}),
      "[reshape] cannot reshape (2, 3) (6 elements) to (4, -1)", Error);
  CHECK_THROWS_WITH_AS(reshape(a, {-1, -1}),
                       "[reshape] expected at most one -1, got (-1, -1)",
                       Error);
  CHECK_THROWS_WITH_AS(transpose(a, 0, 2),
                       "[transpose] expected an axis in [-2, 2), got 2", Error);
  CHECK_THROWS_WITH_AS(permute(a, {0, 0}), "[permute] axis 0 given twice",
                       Error);
  CHECK_THROWS_WITH_AS(slice(a, 1, 2, 4),
                       "[slice] expected 0 <= start <= end <= 3 on axis 1, got "
                       "start 2, end 4",
                       Error);
  CHECK_THROWS_WITH_AS(concat({a, Tensor::zeros({3, 3})}, 1),
                       "[concat] expected shapes equal except on axis 1, got "
                       "(2, 3) and (3, 3)",
                       Error);
  CHECK_THROWS_WITH_AS(concat({}, 0),
                       "[concat] expected at least one tensor, got 0", Error);
}
