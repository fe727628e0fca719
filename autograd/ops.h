// Differentiable ops. Each computes its result on the CPU (f32 and f64),
// and, when an input requires a gradient, records a backward function
// (autograd/node.h). Inputs of any layout are accepted; results are
// contiguous, except reshape, transpose, permute and slice, which return
// views sharing the input's storage. Errors name the op and the shapes or
// dtypes it got.
#pragma once

#include <vector>

#include "autograd/engine.h"
#include "autograd/node.h"
#include "core/philox.h"
#include "core/tensor.h"

namespace kbit {

// ---- elementwise (autograd/ops_elementwise.cpp) ----
// Binary ops broadcast with numpy rules; both inputs share one dtype.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
// Scalar ops: a + s, a * s, s - a (rsub), s / a (rdiv), a^p.
Tensor add_scalar(const Tensor& a, double s);
Tensor mul_scalar(const Tensor& a, double s);
Tensor rsub_scalar(double s, const Tensor& a);
Tensor rdiv_scalar(double s, const Tensor& a);
Tensor pow_scalar(const Tensor& a, double p);
Tensor neg(const Tensor& a);
Tensor exp(const Tensor& a);
Tensor log(const Tensor& a);
Tensor sqrt(const Tensor& a);
Tensor tanh(const Tensor& a);
Tensor relu(const Tensor& a);
// GELU, tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
Tensor gelu(const Tensor& a);

inline Tensor operator+(const Tensor& a, const Tensor& b) {
  return add(a, b);
}
inline Tensor operator-(const Tensor& a, const Tensor& b) {
  return sub(a, b);
}
inline Tensor operator*(const Tensor& a, const Tensor& b) {
  return mul(a, b);
}
inline Tensor operator/(const Tensor& a, const Tensor& b) {
  return div(a, b);
}
inline Tensor operator-(const Tensor& a) {
  return neg(a);
}
inline Tensor operator+(const Tensor& a, double s) {
  return add_scalar(a, s);
}
inline Tensor operator-(const Tensor& a, double s) {
  return add_scalar(a, -s);
}
inline Tensor operator*(const Tensor& a, double s) {
  return mul_scalar(a, s);
}
inline Tensor operator/(const Tensor& a, double s) {
  return mul_scalar(a, 1.0 / s);
}
inline Tensor operator+(double s, const Tensor& a) {
  return add_scalar(a, s);
}
inline Tensor operator-(double s, const Tensor& a) {
  return rsub_scalar(s, a);
}
inline Tensor operator*(double s, const Tensor& a) {
  return mul_scalar(a, s);
}
inline Tensor operator/(double s, const Tensor& a) {
  return rdiv_scalar(s, a);
}

// ---- reductions (autograd/ops_reduce.cpp) ----
// Over the given axes (negative allowed); all axes when `axes` is empty.
Tensor sum(const Tensor& a, const std::vector<int>& axes = {},
           bool keepdim = false);
Tensor mean(const Tensor& a, const std::vector<int>& axes = {},
            bool keepdim = false);
// Sums `a` down to `shape` (the adjoint of broadcasting to a's shape).
Tensor sum_to(const Tensor& a, const Shape& shape);

// ---- shape ops (autograd/ops_shape.cpp) ----
Tensor reshape(const Tensor& a, const Shape& shape);  // one -1 allowed
Tensor transpose(const Tensor& a, int axis0, int axis1);
Tensor permute(const Tensor& a, const std::vector<int>& axes);
Tensor slice(const Tensor& a, int axis, int64_t start, int64_t end);
Tensor concat(const std::vector<Tensor>& parts, int axis);

// ---- neural-network ops (autograd/ops_nn.cpp) ----
// (M, K) x (K, N) -> (M, N); or batched (..., M, K) x (..., K, N) with equal
// batch dims, where b may also be 2-D and is then shared by every batch.
Tensor matmul(const Tensor& a, const Tensor& b);
// x (..., in) times weight (out, in) transposed, plus bias (out) if defined.
Tensor linear(const Tensor& x, const Tensor& weight,
              const Tensor& bias = Tensor());
// gelu(x + bias) in one pass; x (..., n), bias (n). With a bias-free
// linear before it, the same as gelu(linear(x, w, b)) with less memory
// traffic (the GPT MLP).
Tensor bias_gelu(const Tensor& x, const Tensor& bias);
Tensor softmax(const Tensor& a, int axis = -1);
Tensor log_softmax(const Tensor& a, int axis = -1);
// Mean over rows of -log_softmax(logits)[row, target]; logits (N, C),
// targets (N) of dtype i32 or i64 with values in [0, C).
Tensor cross_entropy(const Tensor& logits, const Tensor& targets);
// Normalizes over the last axis; weight and bias have that axis' size.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias,
                  double eps = 1e-5);
// Rows of weight (V, C) picked by indices (any shape, i32 or i64) ->
// indices.shape + (C).
Tensor embedding(const Tensor& weight, const Tensor& indices);
// Zeroes each element with probability p and scales the rest by 1/(1-p)
// when training; the identity otherwise. The mask comes from rng.
Tensor dropout(const Tensor& a, double p, bool training, Philox& rng);

// ---- attention (autograd/ops_attention.cpp) ----
// Causal multi-head self-attention on packed q|k|v. qkv (B, T, 3C): q in
// columns [0, C), k in [C, 2C), v in [2C, 3C); head h of size
// D = C / n_head uses columns [h D, (h+1) D) of each. Position t attends
// to positions 0..t with softmax scale 1/sqrt(D). Returns (B, T, C),
// heads side by side. f32 and f64.
Tensor causal_attention(const Tensor& qkv, int64_t n_head);

}  // namespace kbit
