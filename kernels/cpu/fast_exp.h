// A branch-free exp for f32 that vectorizes in plain loops.
//
// exp(x) = 2^n * exp(r) with n = round(x / ln 2) and |r| <= ln(2) / 2; r is
// reduced in two steps (ln 2 split into a high part exact in f32 and a low
// correction), exp(r) is the degree-7 Taylor polynomial (truncation below
// 0.347^8 / 8! ~ 5e-9, under 0.1 ulp), and 2^n is built in the exponent
// bits. Inputs are clamped to [-87, 88] so 2^n stays a normal float: above
// 88 the result is exp(88); below -87 it is 0 (an absolute error under
// exp(-87) ~ 1.6e-38), so exp(-inf) = 0 as masked softmax entries need; NaN
// stays NaN. The relative error in [-87, 88] is measured by
// tests/kernels/test_nn_kernels.cpp (bound: kFastExpRelTol there).
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace kbit::cpu {

inline float fast_exp(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693145751953125f;  // 11 significant bits
  constexpr float kLn2Lo = 1.428606765330187e-06f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: rounds to an integer
  float xc = std::min(std::max(x, -87.0f), 88.0f);
  float t = xc * kLog2e + kRound;
  float n = t - kRound;
  float r = xc - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t e = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(kRound);
  float scale = std::bit_cast<float>((e + 127) << 23);
  return x < -87.0f ? 0.0f : p * scale;
}

// exp for the kernels: fast_exp in f32, std::exp in f64 (gradient checks).
inline float exp_of(float x) {
  return fast_exp(x);
}
inline double exp_of(double x) {
  return std::exp(x);
}

}  // namespace kbit::cpu
