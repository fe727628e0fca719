// Elementwise loops on the CPU: binary ops with broadcasting, unary maps and
// their backward maps, strided copies. Raw pointers and element strides; the
// autograd ops (autograd/ops_elementwise.cpp) choose the path.
//
// Shapes: n elements for flat loops; (rows, cols) for row broadcasts; any
// Shape with per-operand element strides for the strided loops (a stride of
// 0 broadcasts that axis). Outputs may alias an input of the same layout.
// Loops at or above kParallelThreshold elements split across OpenMP threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/shape.h"
#include "kernels/cpu/fast_exp.h"

namespace kbit::cpu {

// Below this many elements a loop stays on one thread: the fork/join of an
// OpenMP region (a few microseconds) would cost more than the loop.
constexpr int64_t kParallelThreshold = int64_t(1) << 15;

enum class Binary { add, sub, mul, div };

// Unary maps; `alpha` is the scalar of the *_scalar ops:
// add_scalar x + alpha, mul_scalar x * alpha, rsub_scalar alpha - x,
// rdiv_scalar alpha / x, pow_scalar x^alpha.
enum class Unary {
  neg,
  exp,
  log,
  sqrt,
  tanh,
  relu,
  gelu,
  add_scalar,
  mul_scalar,
  rsub_scalar,
  rdiv_scalar,
  pow_scalar,
};

const char* unary_name(Unary op);

// GELU, tanh form: 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
// Computed through the identity 0.5 (1 + tanh(u)) = s = 1 / (1 + e^(-2u)),
// so that for negative x neither 1 + tanh(u) nor 1 - tanh(u)^2 cancels in
// f32: 1 - tanh(u)^2 = 4 s (1 - s) and 1 - s = e^(-2u) s. 2u is clamped to
// [-80, 80], where s is 1 or 0 to f32 precision and e^(-2u) cannot overflow.
template <typename T>
inline void gelu_parts(T x, T& s, T& one_minus_s, T& du_dx) {
  const T c = T(0.7978845608028654);  // sqrt(2 / pi)
  const T k = T(0.044715);
  T two_u = T(2) * c * (x + k * x * x * x);
  two_u = std::min(std::max(two_u, T(-80)), T(80));
  T e = exp_of(-two_u);  // fast_exp in f32 (kernels/cpu/fast_exp.h)
  s = T(1) / (T(1) + e);
  one_minus_s = e * s;
  du_dx = c * (T(1) + T(3) * k * x * x);
}
template <typename T>
inline T gelu_value(T x) {
  T s, one_minus_s, du_dx;
  gelu_parts(x, s, one_minus_s, du_dx);
  return x * s;
}
// d gelu / dx = s + 0.5 x (1 - tanh(u)^2) du/dx = s + 2 x s (1 - s) du/dx.
template <typename T>
inline T gelu_grad(T x) {
  T s, one_minus_s, du_dx;
  gelu_parts(x, s, one_minus_s, du_dx);
  return s + T(2) * x * s * one_minus_s * du_dx;
}

// exp in f32 without a libm call: fast_exp, which saturates at exp(88),
// and above x = 80 the square of fast_exp(x / 2), which reaches the top of
// the f32 range (exp(88.72) ~ 3.4e38) and overflows to inf past it, as
// std::exp does. Below -87 the result is 0 (true value < 1.7e-38).
inline float exp_op(float x) {
  float h = fast_exp(0.5f * x);
  float e = fast_exp(x);
  return x > 80.0f ? h * h : e;
}
inline double exp_op(double x) {
  return std::exp(x);
}

// tanh in f32 without a libm call, so loops of it vectorize: for |x| <
// 0.25 the odd Taylor polynomial through x^9 (truncation under 1e-8
// relative), else (1 - e) / (1 + e) with e = exp(-2 |x|), where 1 - e is
// exact (e in [0.5, 1] near the switch) and the error is that of e, a few
// ulps. f64 keeps std::tanh (gradient checks).
inline float tanh_of(float x) {
  float t = std::abs(x);
  float x2 = x * x;
  float p = 62.0f / 2835.0f;
  p = p * x2 - 17.0f / 315.0f;
  p = p * x2 + 2.0f / 15.0f;
  p = p * x2 - 1.0f / 3.0f;
  p = x + x * x2 * p;
  float e = fast_exp(-2.0f * t);
  float q = std::copysign((1.0f - e) / (1.0f + e), x);
  return t < 0.25f ? p : q;
}
inline double tanh_of(double x) {
  return std::tanh(x);
}

// out[i] = f(x[i]) for i < n.
template <typename T, typename F>
void map(int64_t n, const T* x, T* out, F f) {
  if (n >= kParallelThreshold) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) out[i] = f(x[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = f(x[i]);
  }
}

// out[i] = f(a[i], b[i]) for i < n.
template <typename T, typename F>
void map2(int64_t n, const T* a, const T* b, T* out, F f) {
  if (n >= kParallelThreshold) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) out[i] = f(a[i], b[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = f(a[i], b[i]);
  }
}

// out[i] = f(a[i], b[i], c[i]) for i < n.
template <typename T, typename F>
void map3(int64_t n, const T* a, const T* b, const T* c, T* out, F f) {
  if (n >= kParallelThreshold) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) out[i] = f(a[i], b[i], c[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = f(a[i], b[i], c[i]);
  }
}

// a, b, out (n): out = a op b.
template <typename T>
void binary(Binary op, int64_t n, const T* a, const T* b, T* out);
// a, out (n): out = a op b (b a scalar).
template <typename T>
void binary_scalar_b(Binary op, int64_t n, const T* a, T b, T* out);
// b, out (n): out = a op b (a a scalar).
template <typename T>
void binary_scalar_a(Binary op, int64_t n, T a, const T* b, T* out);
// out (shape) contiguous = a op b, with a and b read at element strides sa
// and sb over `shape` (0 where an operand is broadcast).
template <typename T>
void binary_strided(Binary op, const Shape& shape, const T* a, const Shape& sa,
                    const T* b, const Shape& sb, T* out);
// x, out (rows, cols), bias (cols): out = x + bias on every row.
template <typename T>
void add_rows(int64_t rows, int64_t cols, const T* x, const T* bias, T* out);

// x, out (n): out = op(x).
template <typename T>
void unary(Unary op, int64_t n, const T* x, T* out, double alpha = 0.0);
// x, y, g, gx (n): gx = g * d op(x) / dx, given x and y = op(x) (either may
// be null when the op does not read it: exp, sqrt, tanh read y; relu, gelu,
// log, pow, rdiv read x; the rest neither).
template <typename T>
void unary_backward(Unary op, int64_t n, const T* x, const T* y, const T* g,
                    T* gx, double alpha = 0.0);

// dst[i] = src[i] over `shape`, both at their own element strides (src
// strides may be 0 to broadcast).
template <typename T>
void copy_strided(const Shape& shape, const T* src, const Shape& src_strides,
                  T* dst, const Shape& dst_strides);

}  // namespace kbit::cpu
