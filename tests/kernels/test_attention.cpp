// The causal attention kernels (kernels/cpu/attention.h) against the
// reference loops (kernels/ref/attention.h), forward and backward, in f32
// and f64, on odd shapes: T = 1, T not a multiple of the tile, D = 1 and
// 3, one head, and a shape above the OpenMP threshold.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "core/philox.h"
#include "kernels/cpu/attention.h"
#include "kernels/ref/attention.h"

using namespace kbit;

namespace {

// f32 kernels against double references: fast_exp (< 1 ulp) and f32 sums
// of up to T * D ~ 4000 products of O(1) values (errors seen ~1e-6).
constexpr double kF32Atol = 2e-5;
constexpr double kF32Rtol = 1e-4;
// f64 kernels against double references: only summation order differs.
constexpr double kF64Tol = 1e-12;

struct AttnShape {
  int64_t B, T, H, D;
};

template <typename T>
std::vector<T> random_vec(int64_t n, uint64_t seed, double scale) {
  std::vector<double> d(static_cast<size_t>(n));
  Philox rng(seed);
  rng.fill_normal(d.data(), n, 0.0, scale);
  return std::vector<T>(d.begin(), d.end());
}

template <typename T>
void check_close(const std::vector<T>& got, const std::vector<T>& want,
                 const char* what, double atol, double rtol) {
  REQUIRE(got.size() == want.size());
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double tol = atol + rtol * std::abs(double(want[i]));
    if (!(std::abs(double(got[i]) - double(want[i])) <= tol)) {
      if (bad++ == 0) first = i;
    }
  }
  CHECK_MESSAGE(bad == 0, what, ": ", bad, " of ", got.size(),
                " elements differ; first at ", first, ": got ", got[first],
                ", want ", want[first]);
}

template <typename T>
void check_shape(const AttnShape& s, double atol, double rtol) {
  CAPTURE(s.B);
  CAPTURE(s.T);
  CAPTURE(s.H);
  CAPTURE(s.D);
  const int64_t C = s.H * s.D;
  // Scale 2: scores of a few units, so softmax rows are far from uniform.
  std::vector<T> qkv = random_vec<T>(s.B * s.T * 3 * C, 11, 2.0);
  std::vector<T> dout = random_vec<T>(s.B * s.T * C, 12, 1.0);
  std::vector<T> out(dout.size()), want(dout.size());
  // NaN-filled: the backward pass must read only what the forward wrote.
  std::vector<T> probs(size_t(s.B * s.H * s.T * cpu::attention_row<T>(s.T)),
                       T(NAN));
  cpu::causal_attention(qkv.data(), out.data(), probs.data(), s.B, s.T, s.H,
                        s.D);
  ref::causal_attention(qkv.data(), want.data(), s.B, s.T, s.H, s.D);
  check_close(out, want, "forward", atol, rtol);

  // NaN-filled: every gradient element must be written.
  std::vector<T> dqkv(qkv.size(), T(NAN)), dwant(qkv.size());
  cpu::causal_attention_backward(qkv.data(), probs.data(), dout.data(),
                                 dqkv.data(), s.B, s.T, s.H, s.D);
  ref::causal_attention_backward(qkv.data(), dout.data(), dwant.data(), s.B,
                                 s.T, s.H, s.D);
  check_close(dqkv, dwant, "backward", atol, rtol);
}

const AttnShape kShapes[] = {
    {1, 1, 1, 1},  {2, 1, 3, 2},  {1, 7, 1, 3},  {2, 7, 3, 3},
    {1, 33, 2, 5}, {3, 40, 2, 1}, {2, 64, 4, 8}, {2, 131, 4, 32},
};

}  // namespace

TEST_CASE("kernels: attention f32 matches the reference") {
  for (const AttnShape& s : kShapes) check_shape<float>(s, kF32Atol, kF32Rtol);
}

TEST_CASE("kernels: attention f64 matches the reference") {
  for (const AttnShape& s : kShapes) check_shape<double>(s, kF64Tol, kF64Tol);
}
