// The fast sums (kernels/cpu/reduce.h) against the reference loops
// (kernels/ref/reduce.h) on random odd shapes in f32, directly and through
// sum() over axis sets.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "kernels/cpu/reduce.h"
#include "kernels/ref/reduce.h"

using namespace kbit;

namespace {

// Both accumulate in double; only the order differs (error ~ n * 1e-16
// relative to sum |x|), then each rounds once to f32 (rel 6e-8).
constexpr double kSumRtol = 2e-7;
constexpr double kSumAtol = 1e-6;

void check_close(const std::vector<float>& got, const std::vector<float>& want,
                 const std::string& what) {
  REQUIRE_MESSAGE(got.size() == want.size(), what);
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double g = got[i], w = want[i];
    if (std::abs(g - w) > kSumAtol + kSumRtol * std::abs(w) && ++bad <= 3) {
      FAIL_CHECK(what, ": element ", i, " got ", g, " expected ", w);
    }
  }
  CHECK_MESSAGE(bad == 0, what, ": ", bad, " elements differ");
}

void check_sum_mid(int64_t outer, int64_t red, int64_t inner, uint64_t seed) {
  Philox rng(seed);
  Tensor x = Tensor::randn({outer, red, inner}, rng);
  std::vector<float> got(size_t(outer * inner)), want(got.size());
  cpu::sum_mid(outer, red, inner, x.data<float>(), got.data());
  ref::sum_mid(outer, red, inner, x.data<float>(), want.data());
  check_close(got, want, "sum_mid " + shape_str({outer, red, inner}));
}

}  // namespace

TEST_CASE("kernels: reduce sum_mid, sum_rows, sum_cols match the reference") {
  check_sum_mid(1, 1, 1, 1);
  check_sum_mid(7, 13, 1, 2);      // sum_rows
  check_sum_mid(1, 13, 7, 3);      // sum_cols
  check_sum_mid(5, 11, 3, 4);      // the middle axis
  check_sum_mid(3, 0, 5, 5);       // empty axis: zeros
  check_sum_mid(1, 100003, 1, 6);  // one long row: chunked parallel sum
  check_sum_mid(301, 257, 1, 7);   // many rows in parallel
  check_sum_mid(1, 50001, 3, 8);   // tall: rows split, partials merged
  check_sum_mid(1, 41, 1031, 9);   // wide: columns split
  check_sum_mid(9, 1001, 5, 10);   // parallel over outer

  Philox rng(11);
  Tensor x = Tensor::randn({33, 65}, rng);
  std::vector<float> rows(33), cols(65), want_rows(33), want_cols(65);
  cpu::sum_rows(33, 65, x.data<float>(), rows.data());
  cpu::sum_cols(33, 65, x.data<float>(), cols.data());
  ref::sum_mid(33, 65, 1, x.data<float>(), want_rows.data());
  ref::sum_mid(1, 33, 65, x.data<float>(), want_cols.data());
  check_close(rows, want_rows, "sum_rows (33, 65)");
  check_close(cols, want_cols, "sum_cols (33, 65)");
}

TEST_CASE("kernels: reduce sum over axis sets matches the reference") {
  Philox rng(12);
  const Shape shape = {3, 5, 1, 7, 4};
  Tensor x = Tensor::randn(shape, rng);
  const std::vector<std::vector<int>> axis_sets = {
      {}, {0}, {4}, {1, 3}, {0, 2, 4}, {0, 1, 3}, {2}, {-1, -2}, {0, 4}};
  for (const auto& axes : axis_sets) {
    std::vector<bool> flags(shape.size(), axes.empty());
    for (int a : axes) flags[size_t(a < 0 ? a + 5 : a)] = true;
    Tensor got = sum(x, axes, true);
    std::vector<float> want(size_t(got.numel()));
    ref::sum_axes(shape, x.data<float>(), flags, want.data());
    check_close(got.to_vector<float>(), want,
                "sum over " + std::to_string(axes.size()) + " axes");
  }
  // The same sums of a permuted view.
  Tensor p = x.permute_view({3, 0, 4, 2, 1});  // (7, 3, 4, 1, 5)
  Tensor pc = p.contiguous();
  std::vector<float> want(7 * 4);
  ref::sum_axes(pc.shape(), pc.data<float>(), {false, true, false, true, true},
                want.data());
  check_close(sum(p, {1, 3, 4}).to_vector<float>(), want,
              "sum of a permuted view");
}
