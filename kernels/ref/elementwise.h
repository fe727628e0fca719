// Reference elementwise loops: one element at a time through a full
// multi-index, computed in double. The oracles of kernels/cpu/elementwise.h.
#pragma once

#include <cmath>
#include <vector>

#include "kernels/cpu/elementwise.h"

namespace kbit::ref {

inline double binary_value(cpu::Binary op, double a, double b) {
  switch (op) {
    case cpu::Binary::add:
      return a + b;
    case cpu::Binary::sub:
      return a - b;
    case cpu::Binary::mul:
      return a * b;
    case cpu::Binary::div:
      return a / b;
  }
  return 0;
}

inline double unary_value(cpu::Unary op, double x, double s) {
  const double c = std::sqrt(2.0 / M_PI);
  switch (op) {
    case cpu::Unary::neg:
      return -x;
    case cpu::Unary::exp:
      return std::exp(x);
    case cpu::Unary::log:
      return std::log(x);
    case cpu::Unary::sqrt:
      return std::sqrt(x);
    case cpu::Unary::tanh:
      return std::tanh(x);
    case cpu::Unary::relu:
      return x < 0 ? 0 : x;  // nan stays nan
    case cpu::Unary::gelu:
      return 0.5 * x * (1 + std::tanh(c * (x + 0.044715 * x * x * x)));
    case cpu::Unary::add_scalar:
      return x + s;
    case cpu::Unary::mul_scalar:
      return x * s;
    case cpu::Unary::rsub_scalar:
      return s - x;
    case cpu::Unary::rdiv_scalar:
      return s / x;
    case cpu::Unary::pow_scalar:
      return std::pow(x, s);
  }
  return 0;
}

// The derivative d op(x) / dx, by the textbook formula of each op.
inline double unary_derivative(cpu::Unary op, double x, double s) {
  const double c = std::sqrt(2.0 / M_PI), k = 0.044715;
  switch (op) {
    case cpu::Unary::neg:
    case cpu::Unary::rsub_scalar:
      return -1;
    case cpu::Unary::add_scalar:
      return 1;
    case cpu::Unary::mul_scalar:
      return s;
    case cpu::Unary::exp:
      return std::exp(x);
    case cpu::Unary::log:
      return 1 / x;
    case cpu::Unary::sqrt:
      return 0.5 / std::sqrt(x);
    case cpu::Unary::tanh:
      return 1 - std::tanh(x) * std::tanh(x);
    case cpu::Unary::relu:
      return x > 0 ? 1 : 0;
    case cpu::Unary::gelu: {
      double t = std::tanh(c * (x + k * x * x * x));
      return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * k * x * x);
    }
    case cpu::Unary::rdiv_scalar:
      return -s / (x * x);
    case cpu::Unary::pow_scalar:
      return s * std::pow(x, s - 1);
  }
  return 0;
}

// Row-major multi-index of flat index i over shape.
inline std::vector<int64_t> unravel(int64_t i, const Shape& shape) {
  std::vector<int64_t> idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = i % shape[d];
    i /= shape[d];
  }
  return idx;
}

// The element offset of the broadcast index `idx` (of the output's rank) in
// a contiguous operand of shape `shape`.
inline int64_t broadcast_offset(const std::vector<int64_t>& idx,
                                const Shape& shape) {
  size_t lead = idx.size() - shape.size();
  int64_t off = 0;
  for (size_t d = 0; d < shape.size(); ++d) {
    off = off * shape[d] + (shape[d] == 1 ? 0 : idx[lead + d]);
  }
  return off;
}

// a (shape_a), b (shape_b) contiguous -> out (out_shape, their numpy
// broadcast) contiguous.
template <typename T>
void binary_broadcast(cpu::Binary op, const Shape& shape_a, const T* a,
                      const Shape& shape_b, const T* b, const Shape& out_shape,
                      T* out) {
  for (int64_t i = 0; i < shape_numel(out_shape); ++i) {
    std::vector<int64_t> idx = unravel(i, out_shape);
    double va = a[broadcast_offset(idx, shape_a)];
    double vb = b[broadcast_offset(idx, shape_b)];
    out[i] = T(binary_value(op, va, vb));
  }
}

template <typename T>
void unary(cpu::Unary op, int64_t n, const T* x, T* out, double s = 0) {
  for (int64_t i = 0; i < n; ++i) out[i] = T(unary_value(op, x[i], s));
}

template <typename T>
void unary_backward(cpu::Unary op, int64_t n, const T* x, const T* g, T* gx,
                    double s = 0) {
  for (int64_t i = 0; i < n; ++i) {
    gx[i] = T(double(g[i]) * unary_derivative(op, x[i], s));
  }
}

template <typename T>
void copy_strided(const Shape& shape, const T* src, const Shape& src_strides,
                  T* dst, const Shape& dst_strides) {
  for (int64_t i = 0; i < shape_numel(shape); ++i) {
    std::vector<int64_t> idx = unravel(i, shape);
    int64_t os = 0, od = 0;
    for (size_t d = 0; d < shape.size(); ++d) {
      os += idx[d] * src_strides[d];
      od += idx[d] * dst_strides[d];
    }
    dst[od] = src[os];
  }
}

}  // namespace kbit::ref
