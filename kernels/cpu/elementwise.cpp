#include "kernels/cpu/elementwise.h"

#include <algorithm>

namespace kbit::cpu {
namespace {

// A loop nest after coalescing: size-1 axes dropped, adjacent axes merged
// where both operands step through them as one axis. s[0], s[1] are the two
// operands' element strides; the last axis is the inner loop.
struct Dims {
  Shape shape;
  Shape s[2];
};

Dims coalesce(const Shape& shape, const Shape& s0, const Shape& s1) {
  Dims d;
  for (size_t i = 0; i < shape.size(); ++i) {
    int64_t n = shape[i];
    if (n == 1) continue;
    if (!d.shape.empty() && d.s[0].back() == s0[i] * n &&
        d.s[1].back() == s1[i] * n) {
      d.shape.back() *= n;
      d.s[0].back() = s0[i];
      d.s[1].back() = s1[i];
      continue;
    }
    d.shape.push_back(n);
    d.s[0].push_back(s0[i]);
    d.s[1].push_back(s1[i]);
  }
  if (d.shape.empty()) {  // one element
    d.shape = {1};
    d.s[0] = {0};
    d.s[1] = {0};
  }
  return d;
}

// Element offset of row r (an index over every axis but the last).
int64_t row_offset(int64_t r, const Shape& shape, const Shape& strides) {
  int64_t off = 0;
  for (size_t d = shape.size() - 1; d-- > 0;) {
    off += (r % shape[d]) * strides[d];
    r /= shape[d];
  }
  return off;
}

// Calls row(r, offset0, offset1) for every row of the nest.
template <typename F>
void for_rows(const Dims& d, F row) {
  int64_t inner = d.shape.back();
  int64_t rows = shape_numel(d.shape) / inner;
  auto body = [&](int64_t r) {
    row(r, row_offset(r, d.shape, d.s[0]), row_offset(r, d.shape, d.s[1]));
  };
  if (rows > 1 && rows * inner >= kParallelThreshold) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) body(r);
  } else {
    for (int64_t r = 0; r < rows; ++r) body(r);
  }
}

// Calls f with the functor of `op`.
template <typename F>
void with_binary(Binary op, F f) {
  switch (op) {
    case Binary::add:
      return f([](auto a, auto b) { return a + b; });
    case Binary::sub:
      return f([](auto a, auto b) { return a - b; });
    case Binary::mul:
      return f([](auto a, auto b) { return a * b; });
    case Binary::div:
      return f([](auto a, auto b) { return a / b; });
  }
}

// One row of a strided binary loop: n elements at strides ia, ib.
template <typename T, typename F>
void binary_row(int64_t n, const T* a, int64_t ia, const T* b, int64_t ib,
                T* out, F f) {
  if (ia == 1 && ib == 1) {
    for (int64_t i = 0; i < n; ++i) out[i] = f(a[i], b[i]);
  } else if (ia == 1 && ib == 0) {
    T bv = *b;
    for (int64_t i = 0; i < n; ++i) out[i] = f(a[i], bv);
  } else if (ia == 0 && ib == 1) {
    T av = *a;
    for (int64_t i = 0; i < n; ++i) out[i] = f(av, b[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = f(a[i * ia], b[i * ib]);
  }
}

// Calls f with the functor x -> op(x) for `op` and `alpha`.
template <typename T, typename F>
void with_unary(Unary op, T alpha, F f) {
  switch (op) {
    case Unary::neg:
      return f([](T x) { return -x; });
    case Unary::exp:
      return f([](T x) { return std::exp(x); });
    case Unary::log:
      return f([](T x) { return std::log(x); });
    case Unary::sqrt:
      return f([](T x) { return std::sqrt(x); });
    case Unary::tanh:
      return f([](T x) { return std::tanh(x); });
    case Unary::relu:
      return f([](T x) { return x > T(0) ? x : T(0); });
    case Unary::gelu:
      return f([](T x) { return gelu_value(x); });
    case Unary::add_scalar:
      return f([alpha](T x) { return x + alpha; });
    case Unary::mul_scalar:
      return f([alpha](T x) { return x * alpha; });
    case Unary::rsub_scalar:
      return f([alpha](T x) { return alpha - x; });
    case Unary::rdiv_scalar:
      return f([alpha](T x) { return alpha / x; });
    case Unary::pow_scalar:
      return f([alpha](T x) { return std::pow(x, alpha); });
  }
}

}  // namespace

const char* unary_name(Unary op) {
  switch (op) {
    case Unary::neg:
      return "neg";
    case Unary::exp:
      return "exp";
    case Unary::log:
      return "log";
    case Unary::sqrt:
      return "sqrt";
    case Unary::tanh:
      return "tanh";
    case Unary::relu:
      return "relu";
    case Unary::gelu:
      return "gelu";
    case Unary::add_scalar:
      return "add_scalar";
    case Unary::mul_scalar:
      return "mul_scalar";
    case Unary::rsub_scalar:
      return "rsub_scalar";
    case Unary::rdiv_scalar:
      return "rdiv_scalar";
    case Unary::pow_scalar:
      return "pow_scalar";
  }
  return "?";
}

template <typename T>
void binary(Binary op, int64_t n, const T* a, const T* b, T* out) {
  with_binary(op, [&](auto f) { map2(n, a, b, out, f); });
}

template <typename T>
void binary_scalar_b(Binary op, int64_t n, const T* a, T b, T* out) {
  with_binary(op,
              [&](auto f) { map(n, a, out, [&](T x) { return f(x, b); }); });
}

template <typename T>
void binary_scalar_a(Binary op, int64_t n, T a, const T* b, T* out) {
  with_binary(op,
              [&](auto f) { map(n, b, out, [&](T x) { return f(a, x); }); });
}

template <typename T>
void binary_strided(Binary op, const Shape& shape, const T* a, const Shape& sa,
                    const T* b, const Shape& sb, T* out) {
  if (shape_numel(shape) == 0) return;
  Dims d = coalesce(shape, sa, sb);
  int64_t inner = d.shape.back();
  int64_t ia = d.s[0].back(), ib = d.s[1].back();
  with_binary(op, [&](auto f) {
    for_rows(d, [&](int64_t r, int64_t oa, int64_t ob) {
      binary_row(inner, a + oa, ia, b + ob, ib, out + r * inner, f);
    });
  });
}

template <typename T>
void add_rows(int64_t rows, int64_t cols, const T* x, const T* bias, T* out) {
  auto row = [&](int64_t r) {
    const T* xr = x + r * cols;
    T* o = out + r * cols;
    for (int64_t c = 0; c < cols; ++c) o[c] = xr[c] + bias[c];
  };
  if (rows > 1 && rows * cols >= kParallelThreshold) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) row(r);
  } else {
    for (int64_t r = 0; r < rows; ++r) row(r);
  }
}

template <typename T>
void unary(Unary op, int64_t n, const T* x, T* out, double alpha) {
  with_unary<T>(op, T(alpha), [&](auto f) { map(n, x, out, f); });
}

template <typename T>
void unary_backward(Unary op, int64_t n, const T* x, const T* y, const T* g,
                    T* gx, double alpha) {
  const T s = T(alpha);
  switch (op) {
    case Unary::neg:
    case Unary::rsub_scalar:
      return map(n, g, gx, [](T v) { return -v; });
    case Unary::add_scalar:
      return map(n, g, gx, [](T v) { return v; });
    case Unary::mul_scalar:
      return map(n, g, gx, [s](T v) { return v * s; });
    case Unary::exp:
      return map2(n, g, y, gx, [](T v, T e) { return v * e; });
    case Unary::sqrt:
      return map2(n, g, y, gx, [](T v, T r) { return v * T(0.5) / r; });
    case Unary::tanh:
      return map2(n, g, y, gx, [](T v, T t) { return v * (T(1) - t * t); });
    case Unary::log:
      return map2(n, g, x, gx, [](T v, T u) { return v / u; });
    case Unary::relu:
      return map2(n, g, x, gx, [](T v, T u) { return u > T(0) ? v : T(0); });
    case Unary::gelu:
      return map2(n, g, x, gx, [](T v, T u) { return v * gelu_grad(u); });
    case Unary::rdiv_scalar:
      return map2(n, g, x, gx, [s](T v, T u) { return -v * s / (u * u); });
    case Unary::pow_scalar:
      return map2(n, g, x, gx,
                  [s](T v, T u) { return v * s * std::pow(u, s - T(1)); });
  }
}

template <typename T>
void copy_strided(const Shape& shape, const T* src, const Shape& src_strides,
                  T* dst, const Shape& dst_strides) {
  if (shape_numel(shape) == 0) return;
  Dims d = coalesce(shape, src_strides, dst_strides);
  int64_t inner = d.shape.back();
  int64_t is = d.s[0].back(), id = d.s[1].back();
  for_rows(d, [&](int64_t, int64_t os, int64_t od) {
    const T* s = src + os;
    T* o = dst + od;
    if (is == 1 && id == 1) {
      std::copy_n(s, inner, o);
    } else if (is == 0 && id == 1) {
      std::fill_n(o, inner, *s);
    } else {
      for (int64_t i = 0; i < inner; ++i) o[i * id] = s[i * is];
    }
  });
}

#define KBIT_INSTANTIATE(T)                                                  \
  template void binary(Binary, int64_t, const T*, const T*, T*);             \
  template void binary_scalar_b(Binary, int64_t, const T*, T, T*);           \
  template void binary_scalar_a(Binary, int64_t, T, const T*, T*);           \
  template void binary_strided(Binary, const Shape&, const T*, const Shape&, \
                               const T*, const Shape&, T*);                  \
  template void add_rows(int64_t, int64_t, const T*, const T*, T*);          \
  template void unary(Unary, int64_t, const T*, T*, double);                 \
  template void unary_backward(Unary, int64_t, const T*, const T*, const T*, \
                               T*, double);                                  \
  template void copy_strided(const Shape&, const T*, const Shape&, T*,       \
                             const Shape&);
KBIT_INSTANTIATE(float)
KBIT_INSTANTIATE(double)
#undef KBIT_INSTANTIATE

}  // namespace kbit::cpu
