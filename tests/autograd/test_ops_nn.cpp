// The differentiable nn ops (autograd/ops_nn.cpp): f64 finite-difference
// gradient checks for every op and layout, forward values, and the errors
// for bad shapes, dtypes, targets and indices.
#include <doctest/doctest.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "autograd/ops.h"
#include "support/gradcheck.h"

using namespace kbit;
using kbit::test::check_gradients;
using kbit::test::leaf;

namespace {

// f32 forward results against f64 ones or exact values: a few f32 ulp.
constexpr double kF32Tol = 1e-5;

// A recorded permutation of `a` (a strided view, no copy), so the ops see
// non-contiguous inputs while the gradient checker perturbs contiguous
// leaves. Backward permutes the gradient back.
Tensor permuted(const Tensor& a, const std::vector<int>& axes) {
  std::vector<int> inverse(axes.size());
  for (size_t i = 0; i < axes.size(); ++i) inverse[size_t(axes[i])] = int(i);
  return record(
      a.permute_view(axes), "test_permute", {a}, [inverse](const Tensor& g) {
        return std::vector<Tensor>{g.permute_view(inverse).contiguous()};
      });
}

// The last two axes swapped (a transposed view of a contiguous matrix).
Tensor transposed(const Tensor& a) {
  std::vector<int> axes(size_t(a.dim()));
  std::iota(axes.begin(), axes.end(), 0);
  std::swap(axes[axes.size() - 1], axes[axes.size() - 2]);
  return permuted(a, axes);
}

Tensor matmul_of(const std::vector<Tensor>& in) {
  return matmul(in[0], in[1]);
}

std::vector<double> values(const Tensor& t) {
  return t.to_vector<double>();
}

}  // namespace

TEST_CASE("ops: nn matmul forward values") {
  Tensor a = Tensor::from_vector<float>({1, 2, 3, 4}, {2, 2});
  Tensor b = Tensor::from_vector<float>({5, 6, 7, 8}, {2, 2});
  CHECK(matmul(a, b).to_vector<float>() == std::vector<float>{19, 22, 43, 50});
  // a^T b through a transposed view: [[1, 3], [2, 4]] x b.
  CHECK(matmul(a.transpose_view(0, 1), b).to_vector<float>() ==
        std::vector<float>{26, 30, 38, 44});
  Tensor c = matmul(Tensor::ones({3, 2, 4}), Tensor::ones({4, 5}));
  CHECK(c.shape() == Shape{3, 2, 5});
  CHECK(c.to_vector<float>() == std::vector<float>(30, 4.0f));
  Tensor empty = matmul(Tensor::ones({0, 3}), Tensor::ones({3, 2}));
  CHECK(empty.shape() == Shape{0, 2});
  Tensor k0 = matmul(Tensor::ones({2, 0}), Tensor::ones({0, 3}));
  CHECK(k0.to_vector<float>() == std::vector<float>(6, 0.0f));
  Tensor k0b = matmul(Tensor::ones({4, 2, 0}), Tensor::ones({4, 0, 3}));
  CHECK(k0b.to_vector<float>() == std::vector<float>(24, 0.0f));
  // No rows: b still gets its (zero) gradient.
  Tensor w = Tensor::ones({3, 2});
  w.set_requires_grad(true);
  backward(matmul(Tensor::ones({0, 3}), w), Tensor::ones({0, 2}));
  REQUIRE(w.grad().defined());
  CHECK(w.grad().to_vector<float>() == std::vector<float>(6, 0.0f));
}

TEST_CASE("ops: nn matmul gradients") {
  check_gradients(matmul_of, {leaf({3, 4}, 1), leaf({4, 5}, 2)}, "2-D");
  check_gradients(matmul_of, {leaf({2, 3, 4}, 3), leaf({2, 4, 5}, 4)},
                  "batched");
  check_gradients(matmul_of, {leaf({2, 2, 3, 4}, 5), leaf({2, 2, 4, 2}, 6)},
                  "4-D batched");
  check_gradients(matmul_of, {leaf({2, 3, 4}, 7), leaf({4, 5}, 8)}, "shared b");
  check_gradients(matmul_of,
                  {leaf({3, 4}, 9), Tensor::ones({4, 2}, DType::f64)},
                  "b without grad");
}

TEST_CASE("ops: nn matmul gradients through strided views") {
  auto tt = [](const std::vector<Tensor>& in) {
    return matmul(transposed(in[0]), transposed(in[1]));
  };
  check_gradients(tt, {leaf({4, 3}, 1), leaf({5, 4}, 2)}, "a^T b^T");
  check_gradients(tt, {leaf({2, 4, 3}, 3), leaf({2, 5, 4}, 4)},
                  "batched a^T b^T");
  check_gradients(tt, {leaf({2, 4, 3}, 5), leaf({5, 4}, 6)},
                  "shared b, transposed a");
  // Batch axis inside the matrix rows: read in place at batch stride 4.
  auto interleaved = [](const std::vector<Tensor>& in) {
    return matmul(permuted(in[0], {1, 0, 2}), in[1]);
  };
  check_gradients(interleaved, {leaf({3, 2, 4}, 7), leaf({4, 2}, 8)},
                  "interleaved batch, shared b");
  check_gradients(interleaved, {leaf({3, 2, 4}, 9), leaf({2, 4, 2}, 10)},
                  "interleaved batch");
  // Neither row- nor column-contiguous: copied first.
  auto copied = [](const std::vector<Tensor>& in) {
    return matmul(permuted(in[0], {2, 0, 1}), in[1]);
  };
  check_gradients(copied, {leaf({3, 4, 2}, 11), leaf({2, 4, 5}, 12)},
                  "copied layout");
}

TEST_CASE("ops: nn linear forward and gradients") {
  Tensor x = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor w = Tensor::from_vector<double>({1, 0, -1, 2, 1, 0}, {2, 3});
  Tensor b = Tensor::from_vector<double>({0.5, -1}, {2});
  CHECK(values(linear(x, w, b)) == std::vector<double>{-1.5, 3, -1.5, 12});
  CHECK(values(linear(x, w)) == std::vector<double>{-2, 4, -2, 13});

  auto with_bias = [](const std::vector<Tensor>& in) {
    return linear(in[0], in[1], in[2]);
  };
  auto no_bias = [](const std::vector<Tensor>& in) {
    return linear(in[0], in[1]);
  };
  check_gradients(with_bias, {leaf({5, 4}, 1), leaf({3, 4}, 2), leaf({3}, 3)},
                  "linear with bias");
  check_gradients(no_bias, {leaf({5, 4}, 4), leaf({3, 4}, 5)},
                  "linear without bias");
  check_gradients(with_bias,
                  {leaf({2, 3, 4}, 6), leaf({3, 4}, 7), leaf({3}, 8)},
                  "linear 3-D x");
  check_gradients(with_bias, {leaf({4}, 9), leaf({3, 4}, 10), leaf({3}, 11)},
                  "linear 1-D x");
  auto wt = [](const std::vector<Tensor>& in) {
    return linear(transposed(in[0]), transposed(in[1]), in[2]);
  };
  check_gradients(wt, {leaf({4, 5}, 12), leaf({4, 3}, 13), leaf({3}, 14)},
                  "linear with transposed x and weight views");
}

TEST_CASE("ops: nn softmax and log_softmax") {
  Tensor x = Tensor::from_vector<float>({1, 2, 3, 1000, 1000, 1000}, {2, 3});
  std::vector<float> y = softmax(x).to_vector<float>();
  double e = std::exp(1.0), s = 1 + e + e * e;
  std::vector<double> want = {1 / s, e / s, e * e / s, 1. / 3, 1. / 3, 1. / 3};
  for (size_t i = 0; i < y.size(); ++i) {
    CHECK(std::abs(y[i] - want[i]) <= kF32Tol);
  }
  std::vector<float> ly = log_softmax(x).to_vector<float>();
  CHECK(std::abs(ly[5] - std::log(1. / 3)) <= kF32Tol);  // no overflow
  // Over axis 0 of (2, 3): each column of [[1, 2, 3], [1000, ...]].
  std::vector<float> y0 = softmax(x, 0).to_vector<float>();
  CHECK(std::abs(y0[3] - 1.0) <= kF32Tol);
  // Masked (-inf) entries get exactly 0, on the last and a middle axis.
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor masked =
        Tensor::from_vector<float>({0, -INFINITY, 2, -INFINITY}, {2, 2}).to(dt);
    CHECK(values(softmax(masked)) == std::vector<double>{1, 0, 1, 0});
    Tensor columns =
        Tensor::from_vector<float>({0, -INFINITY, -INFINITY, 5}, {1, 2, 2})
            .to(dt);
    CHECK(values(softmax(columns, 1)) == std::vector<double>{1, 0, 0, 1});
  }

  for (bool log : {false, true}) {
    CAPTURE(log);
    for (int axis : {-1, 1, 0}) {
      CAPTURE(axis);
      auto f = [log, axis](const std::vector<Tensor>& in) {
        return log ? log_softmax(in[0], axis) : softmax(in[0], axis);
      };
      check_gradients(f, {leaf({2, 4, 3}, 1)}, "softmax");
    }
  }
}

TEST_CASE("ops: nn cross_entropy") {
  Tensor uniform = Tensor::zeros({3, 7});
  Tensor t32 = Tensor::from_vector<int32_t>({0, 6, 2}, {3});
  CHECK(std::abs(cross_entropy(uniform, t32).item() - std::log(7.0)) <=
        kF32Tol);

  // Equals the mean of -log_softmax at the targets.
  Tensor logits = leaf({4, 5}, 1, 3.0);
  Tensor t64 = Tensor::from_vector<int64_t>({4, 0, 2, 2}, {4});
  Tensor ls = log_softmax(logits);
  double want =
      -(ls.at({0, 4}) + ls.at({1, 0}) + ls.at({2, 2}) + ls.at({3, 2})) / 4;
  CHECK(std::abs(cross_entropy(logits, t64).item() - want) <= 1e-12);

  Tensor t32b = Tensor::from_vector<int32_t>({1, 3, 3, 0}, {4});
  auto ce64 = [&](const std::vector<Tensor>& in) {
    return cross_entropy(in[0], t64);
  };
  auto ce32 = [&](const std::vector<Tensor>& in) {
    return cross_entropy(in[0], t32b);
  };
  check_gradients(ce64, {leaf({4, 5}, 2, 2.0)}, "cross_entropy i64");
  check_gradients(ce32, {leaf({4, 5}, 3, 2.0)}, "cross_entropy i32");
}

TEST_CASE("ops: nn layer_norm") {
  Tensor x = Tensor::from_vector<double>({1, 2, 3, 4, 10, 10, 10, 50}, {2, 4});
  Tensor y = layer_norm(x, Tensor::ones({4}, DType::f64),
                        Tensor::zeros({4}, DType::f64), 0.0);
  std::vector<double> v = values(y);
  for (int r = 0; r < 2; ++r) {
    double m = 0, q = 0;
    for (int j = 0; j < 4; ++j) m += v[size_t(r * 4 + j)] / 4;
    for (int j = 0; j < 4; ++j) q += v[size_t(r * 4 + j)] * v[r * 4 + j] / 4;
    CHECK(std::abs(m) <= 1e-12);
    CHECK(std::abs(q - 1) <= 1e-12);
  }
  auto ln = [](const std::vector<Tensor>& in) {
    return layer_norm(in[0], in[1], in[2]);
  };
  check_gradients(ln, {leaf({3, 5}, 1), leaf({5}, 2), leaf({5}, 3)},
                  "layer_norm");
  check_gradients(ln, {leaf({2, 3, 4}, 4), leaf({4}, 5), leaf({4}, 6)},
                  "layer_norm 3-D");
  auto plain = [](const std::vector<Tensor>& in) {
    return layer_norm(in[0], Tensor(), Tensor());
  };
  check_gradients(plain, {leaf({3, 6}, 7)}, "layer_norm without affine");
}

TEST_CASE("ops: nn embedding") {
  Tensor w = Tensor::from_vector<float>({0, 1, 10, 11, 20, 21}, {3, 2});
  Tensor idx = Tensor::from_vector<int32_t>({2, 0, 2, 1}, {2, 2});
  Tensor y = embedding(w, idx);
  CHECK(y.shape() == Shape{2, 2, 2});
  CHECK(y.to_vector<float>() ==
        std::vector<float>{20, 21, 0, 1, 20, 21, 10, 11});

  Tensor i64 = Tensor::from_vector<int64_t>({1, 4, 1, 1, 0, 4}, {3, 2});
  Tensor i32 = Tensor::from_vector<int32_t>({3, 3, 0}, {3});
  auto e64 = [&](const std::vector<Tensor>& in) {
    return embedding(in[0], i64);
  };
  auto e32 = [&](const std::vector<Tensor>& in) {
    return embedding(in[0], i32);
  };
  check_gradients(e64, {leaf({6, 3}, 1)}, "embedding i64, repeated");
  check_gradients(e32, {leaf({4, 5}, 2)}, "embedding i32, repeated");
}

TEST_CASE("ops: nn dropout") {
  Philox rng(11);
  Tensor x = Tensor::ones({1000});
  CHECK(dropout(x, 0.5, false, rng).impl() == x.impl());
  CHECK(dropout(x, 0.0, true, rng).impl() == x.impl());
  CHECK(rng.offset() == 0);
  std::vector<float> y = dropout(x, 0.25, true, rng).to_vector<float>();
  CHECK(rng.offset() == 1000);
  int kept = 0;
  for (float v : y) {
    CHECK((v == 0.0f || std::abs(v - 1 / 0.75f) <= kF32Tol));
    kept += v != 0.0f;
  }
  CHECK(std::abs(kept - 750) <= 70);  // 5 sigma of Binomial(1000, 0.75)
  // The next call continues the stream: a different mask.
  CHECK(dropout(x, 0.25, true, rng).to_vector<float>() != y);

  Philox fixed(5, 17);
  auto f = [&](const std::vector<Tensor>& in) {
    Philox r = fixed;  // the same mask on every call
    return dropout(in[0], 0.4, true, r);
  };
  check_gradients(f, {leaf({4, 5}, 1)}, "dropout");
}

TEST_CASE("ops: nn errors name the op and the values") {
  Tensor a = Tensor::ones({4, 8}), b = Tensor::ones({6, 3});
  CHECK_THROWS_WITH_AS(
      matmul(a, b),
      "[matmul] expected inner dimensions to match, got (4, 8) and (6, 3)",
      Error);
  CHECK_THROWS_WITH_AS(matmul(Tensor::ones({2, 4, 8}), Tensor::ones({3, 8, 2})),
                       "[matmul] expected b to be 2-D or to have a's batch "
                       "dims, got (2, 4, 8) and (3, 8, 2)",
                       Error);
  CHECK_THROWS_WITH_AS(matmul(Tensor::ones({8}), Tensor::ones({8, 2})),
                       "[matmul] expected inputs of at least 2 dims, got (8,) "
                       "and (8, 2)",
                       Error);
  CHECK_THROWS_WITH_AS(matmul(a, Tensor::ones({8, 2}, DType::f64)),
                       "[matmul] expected one dtype, got f32 and f64", Error);
  CHECK_THROWS_WITH_AS(
      matmul(Tensor::ones({2, 2}, DType::i32), Tensor::ones({2, 2})),
      "[matmul] expected a of dtype f32 or f64, got i32", Error);

  CHECK_THROWS_WITH_AS(linear(Tensor::ones({2, 5}), a),
                       "[linear] expected x (..., in) and weight (out, in), "
                       "got (2, 5) and (4, 8)",
                       Error);
  CHECK_THROWS_WITH_AS(linear(Tensor::ones({2, 8}), a, Tensor::ones({3})),
                       "[linear] expected bias of shape (4,), got (3,)", Error);

  CHECK_THROWS_WITH_AS(softmax(a, 2),
                       "[softmax] expected an axis in [-2, 2), got 2", Error);

  Tensor logits = Tensor::zeros({3, 5});
  CHECK_THROWS_WITH_AS(
      cross_entropy(logits, Tensor::from_vector<int64_t>({0, 4, 7}, {3})),
      "[cross_entropy] expected targets in [0, 5), got 7 at row 2", Error);
  CHECK_THROWS_WITH_AS(
      cross_entropy(logits, Tensor::from_vector<int32_t>({0, -1, 2}, {3})),
      "[cross_entropy] expected targets in [0, 5), got -1 at row 1", Error);
  CHECK_THROWS_WITH_AS(cross_entropy(logits, Tensor::zeros({3})),
                       "[cross_entropy] expected targets of dtype i32 or i64, "
                       "got f32",
                       Error);
  CHECK_THROWS_WITH_AS(
      cross_entropy(logits, Tensor::from_vector<int32_t>({0, 1}, {2})),
      "[cross_entropy] expected logits (N, C) with N >= 1 and targets (N,), "
      "got (3, 5) and (2,)",
      Error);

  CHECK_THROWS_WITH_AS(layer_norm(a, Tensor::ones({7}), Tensor()),
                       "[layer_norm] expected weight of shape (8,), got (7,)",
                       Error);
  CHECK_THROWS_WITH_AS(
      embedding(Tensor::zeros({6, 2}),
                Tensor::from_vector<int32_t>({1, 2, 0, 6}, {2, 2})),
      "[embedding] expected indices in [0, 6), got 6 at position 3", Error);
  Philox rng(1);
  CHECK_THROWS_WITH_AS(dropout(a, 1.0, true, rng),
                       "[dropout] expected p in [0, 1), got 1", Error);
  CHECK_THROWS_WITH_AS(dropout(a, -0.5, true, rng),
                       "[dropout] expected p in [0, 1), got -0.5", Error);
}
