// causal_attention (autograd/ops_attention.cpp): f64 finite-difference
// gradient checks, forward values and gradients against a naive
// composition of existing ops (slice, reshape, permute, matmul, a causal
// mask added to the scores, softmax), non-contiguous input, and errors.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "autograd/ops.h"
#include "support/gradcheck.h"

using namespace kbit;
using kbit::test::check_gradients;
using kbit::test::leaf;

namespace {

// f64 fused op against the f64 composition: summation order only.
constexpr double kF64Tol = 1e-10;
// f32 fused op against the f64 composition: fast_exp and f32 sums.
constexpr double kF32Tol = 1e-5;
// A masked score: exp(-1e9 - max) is exactly 0 in f64.
constexpr double kMasked = -1e9;

// (B, T, 3C) -> head-major q, k or v (B, H, T, D); which = 0, 1, 2.
Tensor heads(const Tensor& qkv, int which, int64_t H) {
  const int64_t B = qkv.shape(0), Tn = qkv.shape(1), C = qkv.shape(2) / 3;
  Tensor part = slice(qkv, 2, which * C, (which + 1) * C);
  return permute(reshape(part, {B, Tn, H, C / H}), {0, 2, 1, 3});
}

// The same attention from existing ops, with a materialized (T, T) mask.
Tensor naive_attention(const Tensor& qkv, int64_t H) {
  const int64_t B = qkv.shape(0), Tn = qkv.shape(1), C = qkv.shape(2) / 3;
  std::vector<double> m(size_t(Tn * Tn), 0.0);
  for (int64_t t = 0; t < Tn; ++t) {
    for (int64_t j = t + 1; j < Tn; ++j) m[size_t(t * Tn + j)] = kMasked;
  }
  Tensor mask = Tensor::from_vector<double>(m, {Tn, Tn}).to(qkv.dtype());
  Tensor q = heads(qkv, 0, H), k = heads(qkv, 1, H), v = heads(qkv, 2, H);
  Tensor s = matmul(q, transpose(k, -1, -2)) * (1.0 / std::sqrt(C / H));
  Tensor y = matmul(softmax(s + mask, -1), v);  // (B, H, T, D)
  return reshape(permute(y, {0, 2, 1, 3}), {B, Tn, C});
}

std::vector<double> values(const Tensor& t) {
  return t.to_vector<double>();
}

void check_close(const std::vector<double>& got,
                 const std::vector<double>& want, double tol,
                 const char* what) {
  REQUIRE(got.size() == want.size());
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    bad += !(std::abs(got[i] - want[i]) <= tol * (1 + std::abs(want[i])));
  }
  CHECK_MESSAGE(bad == 0, what, ": ", bad, " of ", got.size(), " differ");
}

struct Case {
  int64_t B, T, H, D;
};

}  // namespace

TEST_CASE("ops: causal_attention gradient check (f64)") {
  for (Case c : {Case{1, 1, 1, 2}, Case{2, 5, 2, 3}, Case{1, 7, 1, 1},
                 Case{1, 35, 1, 2}}) {
    CAPTURE(c.T);
    Tensor qkv = leaf({c.B, c.T, 3 * c.H * c.D}, 31, 1.5);
    int64_t H = c.H;
    check_gradients(
        [H](const std::vector<Tensor>& in) {
          return causal_attention(in[0], H);
        },
        {qkv}, "causal_attention");
  }
}

TEST_CASE("ops: causal_attention matches the naive composition") {
  for (Case c : {Case{2, 9, 3, 4}, Case{1, 40, 2, 8}, Case{3, 1, 2, 2}}) {
    CAPTURE(c.T);
    const int64_t C = c.H * c.D;
    Tensor qkv = leaf({c.B, c.T, 3 * C}, 41, 2.0);
    Tensor w = leaf({c.B, c.T, C}, 42);
    w.set_requires_grad(false);

    Tensor fused = causal_attention(qkv, c.H);
    backward(sum(fused * w));
    std::vector<double> g_fused = values(qkv.grad());
    qkv.zero_grad();
    Tensor naive = naive_attention(qkv, c.H);
    backward(sum(naive * w));
    check_close(values(fused), values(naive), kF64Tol, "forward f64");
    check_close(g_fused, values(qkv.grad()), kF64Tol, "gradient f64");

    Tensor f32 = causal_attention(qkv.detach().to(DType::f32), c.H);
    CHECK(f32.dtype() == DType::f32);
    check_close(values(f32), values(naive), kF32Tol, "forward f32");
  }
}

TEST_CASE("ops: causal_attention reads a non-contiguous input") {
  // qkv (B, T, 3C) as a transposed view of a (B, 3C, T) tensor.
  Tensor base = leaf({2, 12, 5}, 51);
  Tensor qkv = transpose(base, 1, 2);
  REQUIRE(!qkv.is_contiguous());
  check_close(values(causal_attention(qkv, 2)),
              values(causal_attention(qkv.contiguous(), 2)), 0.0,
              "strided input");
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return causal_attention(transpose(in[0], 1, 2), 2);
      },
      {base}, "causal_attention of a strided view");
}

TEST_CASE("ops: causal_attention errors") {
  Tensor x = Tensor::zeros({2, 4, 12});
  CHECK_THROWS_WITH_AS(causal_attention(Tensor::zeros({4, 12}), 2),
                       doctest::Contains("expected qkv (B, T, 3C)"), Error);
  CHECK_THROWS_WITH_AS(causal_attention(Tensor::zeros({2, 4, 10}), 2),
                       doctest::Contains("expected qkv (B, T, 3C)"), Error);
  CHECK_THROWS_WITH_AS(causal_attention(x, 3),
                       doctest::Contains("dividing C = 4, got n_head 3"),
                       Error);
  CHECK_THROWS_WITH_AS(causal_attention(x, 0),
                       doctest::Contains("got n_head 0"), Error);
  CHECK_THROWS_WITH_AS(
      causal_attention(Tensor::zeros({2, 4, 12}, DType::i32), 2),
      doctest::Contains("expected dtype f32 or f64"), Error);
}
