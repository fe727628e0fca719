// The fast elementwise loops (kernels/cpu/elementwise.h) against the
// reference loops (kernels/ref/elementwise.h) on random odd shapes in f32,
// directly and through the ops that pick the fast paths.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/ref/elementwise.h"

using namespace kbit;

namespace {

// f32 add/sub/mul/div round once; the reference rounds its double result
// once: they agree to an ulp or two.
constexpr double kRoundingRtol = 3e-7;
// exp/log/tanh/gelu in float differ from the double formulas by a few ulps,
// more where tanh and the cubic lose bits.
constexpr double kMathRtol = 2e-6;
constexpr double kMathAtol = 1e-6;

void check_close(const std::vector<float>& got, const std::vector<float>& want,
                 double atol, double rtol, const std::string& what) {
  REQUIRE_MESSAGE(got.size() == want.size(), what);
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double g = got[i], w = want[i];
    bool ok = std::abs(g - w) <= atol + rtol * std::abs(w);
    if (!ok && ++bad <= 3) {
      FAIL_CHECK(what, ": element ", i, " got ", g, " expected ", w);
    }
  }
  CHECK_MESSAGE(bad == 0, what, ": ", bad, " elements differ");
}

const cpu::Binary kBinary[] = {cpu::Binary::add, cpu::Binary::sub,
                               cpu::Binary::mul, cpu::Binary::div};
const char* kBinaryName[] = {"add", "sub", "mul", "div"};

Tensor apply_op(cpu::Binary op, const Tensor& a, const Tensor& b) {
  switch (op) {
    case cpu::Binary::add:
      return add(a, b);
    case cpu::Binary::sub:
      return sub(a, b);
    case cpu::Binary::mul:
      return mul(a, b);
    case cpu::Binary::div:
      return div(a, b);
  }
  return Tensor();
}

// b values in [0.5, 2] so division stays well conditioned.
void check_binary_shapes(const Shape& sa, const Shape& sb, uint64_t seed) {
  Philox rng(seed);
  Tensor a = Tensor::randn(sa, rng);
  Tensor b = Tensor::rand(sb, rng, DType::f32, 0.5, 2.0);
  Shape so = broadcast_shapes(sa, sb, "test");
  for (int k = 0; k < 4; ++k) {
    std::vector<float> want(size_t(shape_numel(so)));
    ref::binary_broadcast(kBinary[k], sa, a.data<float>(), sb, b.data<float>(),
                          so, want.data());
    std::string what = std::string(kBinaryName[k]) + " " + shape_str(sa) +
                       " with " + shape_str(sb);
    Tensor out = apply_op(kBinary[k], a, b);
    CHECK(out.shape() == so);
    check_close(out.to_vector<float>(), want, 0, kRoundingRtol, what);
  }
}

}  // namespace

TEST_CASE("kernels: elementwise binary ops match the reference loops") {
  check_binary_shapes({7, 13}, {7, 13}, 1);   // same shape
  check_binary_shapes({7, 13}, {13}, 2);      // row broadcast
  check_binary_shapes({13}, {7, 13}, 3);      // row broadcast, a side
  check_binary_shapes({9, 5}, {9, 1}, 4);     // column broadcast
  check_binary_shapes({5, 1, 9}, {3, 1}, 5);  // both sides grow
  check_binary_shapes({1}, {17, 3}, 6);       // scalar a
  check_binary_shapes({3, 17}, {}, 7);        // 0-d scalar b
  check_binary_shapes({3, 1, 5, 1}, {1, 4, 1, 7}, 8);
  check_binary_shapes({1, 7, 13}, {7, 13}, 13);    // flat despite the shapes
  check_binary_shapes({257, 129}, {257, 129}, 9);  // parallel paths
  check_binary_shapes({257, 129}, {129}, 10);
  check_binary_shapes({31, 1, 129}, {9, 1}, 11);
  check_binary_shapes({0, 3}, {3}, 12);  // empty
}

TEST_CASE("kernels: elementwise binary ops on strided views") {
  Philox rng(13);
  Tensor a = Tensor::randn({13, 7}, rng);
  Tensor b = Tensor::rand({7, 29}, rng, DType::f32, 0.5, 2.0);
  Tensor at = a.transpose_view(0, 1);  // (7, 13)
  Tensor bs = b.slice_view(1, 3, 16);  // (7, 13)
  Tensor ac = at.contiguous(), bc = bs.contiguous();
  for (int k = 0; k < 4; ++k) {
    std::vector<float> want(7 * 13);
    ref::binary_broadcast(kBinary[k], {7, 13}, ac.data<float>(), {7, 13},
                          bc.data<float>(), {7, 13}, want.data());
    check_close(apply_op(kBinary[k], at, bs).to_vector<float>(), want, 0,
                kRoundingRtol, std::string(kBinaryName[k]) + " of views");
  }
}

TEST_CASE("kernels: elementwise add_rows and flat binary loops") {
  Philox rng(14);
  for (int64_t rows : {1, 3, 301}) {
    int64_t cols = 127;
    Tensor x = Tensor::randn({rows, cols}, rng);
    Tensor bias = Tensor::randn({cols}, rng);
    std::vector<float> got(size_t(rows * cols)), want(got.size());
    cpu::add_rows(rows, cols, x.data<float>(), bias.data<float>(), got.data());
    ref::binary_broadcast(cpu::Binary::add, {rows, cols}, x.data<float>(),
                          {cols}, bias.data<float>(), {rows, cols},
                          want.data());
    check_close(got, want, 0, kRoundingRtol,
                "add_rows with " + std::to_string(rows) + " rows");
  }
  int64_t n = (1 << 15) + 3;
  Tensor a = Tensor::randn({n}, rng), b = Tensor::randn({n}, rng);
  std::vector<float> got(static_cast<size_t>(n)), want(static_cast<size_t>(n));
  cpu::binary(cpu::Binary::mul, n, a.data<float>(), b.data<float>(),
              got.data());
  ref::binary_broadcast(cpu::Binary::mul, {n}, a.data<float>(), {n},
                        b.data<float>(), {n}, want.data());
  check_close(got, want, 0, kRoundingRtol, "flat mul");
}

TEST_CASE("kernels: elementwise unary maps and their backward") {
  struct Case {
    cpu::Unary op;
    double alpha;
    float lo, hi;  // input range (domains of log, sqrt, rdiv, pow)
  };
  const Case cases[] = {
      {cpu::Unary::neg, 0, -3, 3},
      {cpu::Unary::exp, 0, -3, 3},
      {cpu::Unary::log, 0, 0.1f, 5},
      {cpu::Unary::sqrt, 0, 0.1f, 5},
      {cpu::Unary::tanh, 0, -3, 3},
      {cpu::Unary::relu, 0, -3, 3},
      {cpu::Unary::gelu, 0, -5, 5},
      {cpu::Unary::add_scalar, 0.3, -3, 3},
      {cpu::Unary::mul_scalar, -1.7, -3, 3},
      {cpu::Unary::rsub_scalar, 2.5, -3, 3},
      {cpu::Unary::rdiv_scalar, 1.5, 0.5f, 4},
      {cpu::Unary::pow_scalar, 2.5, 0.1f, 3},
  };
  Philox rng(15);
  for (int64_t n : {int64_t(37), int64_t(1 << 15) + 7}) {
    for (const Case& c : cases) {
      std::string what =
          std::string(cpu::unary_name(c.op)) + " n " + std::to_string(n);
      Tensor x = Tensor::rand({n}, rng, DType::f32, c.lo, c.hi);
      Tensor g = Tensor::randn({n}, rng);
      std::vector<float> y(static_cast<size_t>(n)),
          want(static_cast<size_t>(n));
      cpu::unary(c.op, n, x.data<float>(), y.data(), c.alpha);
      ref::unary(c.op, n, x.data<float>(), want.data(), c.alpha);
      check_close(y, want, kMathAtol, kMathRtol, what);

      std::vector<float> gx(static_cast<size_t>(n)),
          gwant(static_cast<size_t>(n));
      cpu::unary_backward(c.op, n, x.data<float>(), y.data(), g.data<float>(),
                          gx.data(), c.alpha);
      ref::unary_backward(c.op, n, x.data<float>(), g.data<float>(),
                          gwant.data(), c.alpha);
      check_close(gx, gwant, kMathAtol, kMathRtol, what + " backward");
    }
  }
}

TEST_CASE("kernels: elementwise strided copies match the reference") {
  Philox rng(16);
  Tensor x = Tensor::randn({3, 5, 7, 2}, rng);
  Tensor p = x.permute_view({2, 0, 3, 1});  // (7, 3, 2, 5)
  std::vector<float> got(size_t(x.numel())), want(got.size());
  Shape dense = contiguous_strides(p.shape());
  cpu::copy_strided(p.shape(), p.data<float>(), p.strides(), got.data(), dense);
  ref::copy_strided(p.shape(), p.data<float>(), p.strides(), want.data(),
                    dense);
  CHECK(got == want);
  CHECK(got == p.to_vector<float>());

  // Large transposes take the tiled path: one matrix split across threads,
  // and a batch of matrices split by matrix.
  Tensor big = Tensor::randn({301, 257}, rng);
  Tensor batch = Tensor::randn({3, 129, 131}, rng);
  for (const Tensor& v :
       {big.transpose_view(0, 1), batch.permute_view({0, 2, 1}),
        batch.permute_view({2, 0, 1})}) {
    std::vector<float> g(static_cast<size_t>(v.numel())), w(g.size());
    Shape dst_strides = contiguous_strides(v.shape());
    cpu::copy_strided(v.shape(), v.data<float>(), v.strides(), g.data(),
                      dst_strides);
    ref::copy_strided(v.shape(), v.data<float>(), v.strides(), w.data(),
                      dst_strides);
    CHECK_MESSAGE(g == w, "transposing copy of ", shape_str(v.shape()));
  }

  // Broadcast source (stride 0) into a strided destination.
  Tensor row = Tensor::randn({9}, rng);
  Tensor dst = Tensor::zeros({9, 4});
  Tensor dst_t = dst.transpose_view(0, 1);  // (4, 9), strides (1, 4)
  cpu::copy_strided({4, 9}, row.data<float>(), {0, 1}, dst_t.data<float>(),
                    dst_t.strides());
  std::vector<float> rv = row.to_vector<float>(), dv = dst.to_vector<float>();
  for (int i = 0; i < 9; ++i) {
    for (int j = 0; j < 4; ++j) CHECK(dv[size_t(i * 4 + j)] == rv[size_t(i)]);
  }
}

TEST_CASE("kernels: elementwise f32 exp, tanh and gelu accuracy over grids") {
  // A geometric grid of |x| from 1e-7 to 40, both signs, plus the switch
  // point of tanh_of (0.25) and its neighbours.
  std::vector<float> xs = {0.0f, 0.25f, std::nextafter(0.25f, 0.0f),
                           std::nextafter(0.25f, 1.0f)};
  for (double m = 1e-7; m < 40; m *= 1.01) {
    xs.push_back(float(m));
    xs.push_back(-float(m));
  }
  int64_t n = int64_t(xs.size());
  std::vector<float> got(xs.size()), want(xs.size());
  for (cpu::Unary op : {cpu::Unary::tanh, cpu::Unary::gelu}) {
    cpu::unary(op, n, xs.data(), got.data());
    ref::unary(op, n, xs.data(), want.data());
    check_close(got, want, kMathAtol * 1e-3, kMathRtol,
                std::string(cpu::unary_name(op)) + " grid");
  }
  // exp over [-87, 88.7]: relative accuracy up to the top of the f32 range.
  std::vector<float> ex;
  for (float v = -87.0f; v < 88.7f; v += 0.0625f) ex.push_back(v);
  std::vector<float> eg(ex.size()), ew(ex.size());
  cpu::unary(cpu::Unary::exp, int64_t(ex.size()), ex.data(), eg.data());
  ref::unary(cpu::Unary::exp, int64_t(ex.size()), ex.data(), ew.data());
  check_close(eg, ew, 0, kMathRtol, "exp grid");
  float big[] = {88.75f, 100.0f, INFINITY, -INFINITY, NAN};
  float eb[5];
  cpu::unary(cpu::Unary::exp, 5, big, eb);
  CHECK(std::isinf(eb[0]));  // past the f32 range, as std::exp
  CHECK(std::isinf(eb[1]));
  CHECK(std::isinf(eb[2]));
  CHECK(eb[3] == 0.0f);
  CHECK(std::isnan(eb[4]));

  float special[] = {INFINITY, -INFINITY, NAN};
  float out[3];
  cpu::unary(cpu::Unary::tanh, 3, special, out);
  CHECK(out[0] == 1.0f);
  CHECK(out[1] == -1.0f);
  CHECK(std::isnan(out[2]));
}
