#include "kernels/cpu/elementwise.h"

#include <omp.h>

#include <algorithm>
#include <vector>

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

// Calls row(r, offset0, offset1) for rows r0..r1 of the nest (a row is an
// index over every axis but the last). Offsets step like an odometer; only
// the first row's are found by division.
template <typename F>
void rows_range(const Dims& d, int64_t r0, int64_t r1, F& row) {
  size_t nd = d.shape.size() - 1;  // the outer axes
  std::vector<int64_t> idx(nd);
  int64_t o0 = 0, o1 = 0;
  for (size_t k = nd, r = size_t(r0); k-- > 0;) {
    idx[k] = int64_t(r % size_t(d.shape[k]));
    r /= size_t(d.shape[k]);
    o0 += idx[k] * d.s[0][k];
    o1 += idx[k] * d.s[1][k];
  }
  for (int64_t r = r0; r < r1; ++r) {
    row(r, o0, o1);
    for (size_t k = nd; k-- > 0;) {
      o0 += d.s[0][k];
      o1 += d.s[1][k];
      if (++idx[k] < d.shape[k]) break;
      o0 -= d.s[0][k] * d.shape[k];
      o1 -= d.s[1][k] * d.shape[k];
      idx[k] = 0;
    }
  }
}

// Calls row(r, offset0, offset1) for every row, split into one contiguous
// range of rows per thread when the nest is large.
template <typename F>
void for_rows_parallel(const Dims& d, int64_t rows, F& row) {
#pragma omp parallel
  {
    int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    rows_range(d, rows * t / nt, rows * (t + 1) / nt, row);
  }
}

template <typename F>
void for_rows(const Dims& d, F row) {
  int64_t inner = d.shape.back();
  int64_t rows = shape_numel(d.shape) / inner;
  if (rows > 1 && rows * inner >= kParallelThreshold) {
    for_rows_parallel(d, rows, row);
  } else {
    rows_range(d, 0, rows, row);
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
      return f([](T x) { return exp_op(x); });
    case Unary::log:
      return f([](T x) { return std::log(x); });
    case Unary::sqrt:
      return f([](T x) { return std::sqrt(x); });
    case Unary::tanh:
      return f([](T x) { return tanh_of(x); });
    case Unary::relu:
      return f([](T x) { return x < T(0) ? T(0) : x; });  // keeps nan
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

// Side of the square tiles of a transposing copy: 32 x 32 f32 source
// lines (4 KiB) stay in L1 while the destination is written row by row.
constexpr int64_t kTile = 32;

// dst[r * dr + c] = src[r * sr + c * sc] for a (rows, cols) block, tile by
// tile so the strided source reads hit cache. Tile rows split across
// threads when `parallel`.
template <typename T>
void copy_tiled(int64_t rows, int64_t cols, const T* src, int64_t sr,
                int64_t sc, T* dst, int64_t dr, bool parallel) {
  auto tile_row = [&](int64_t t) {
    int64_t r0 = t * kTile, r1 = std::min(rows, r0 + kTile);
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      int64_t c1 = std::min(cols, c0 + kTile);
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < c1; ++c)
          dst[r * dr + c] = src[r * sr + c * sc];
      }
    }
  };
  int64_t tiles = (rows + kTile - 1) / kTile;
  if (parallel) {
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < tiles; ++t) tile_row(t);
  } else {
    for (int64_t t = 0; t < tiles; ++t) tile_row(t);
  }
}

// A copy whose source runs with unit stride along the second-to-last axis
// and the destination along the last: a transpose of the last two axes,
// done in tiles for every index of the outer axes.
template <typename T>
void copy_transposing(const Dims& d, const T* src, T* dst) {
  size_t nd = d.shape.size();
  int64_t rows = d.shape[nd - 2], cols = d.shape[nd - 1];
  Dims outer;  // the outer axes plus a dummy inner axis of size 1
  outer.shape.assign(d.shape.begin(), d.shape.end() - 2);
  outer.s[0].assign(d.s[0].begin(), d.s[0].end() - 2);
  outer.s[1].assign(d.s[1].begin(), d.s[1].end() - 2);
  outer.shape.push_back(1);
  outer.s[0].push_back(0);
  outer.s[1].push_back(0);
  int64_t count = shape_numel(outer.shape);
  bool big = count * rows * cols >= kParallelThreshold;
  auto block = [&](int64_t, int64_t os, int64_t od) {
    copy_tiled(rows, cols, src + os, d.s[0][nd - 2], d.s[0][nd - 1], dst + od,
               d.s[1][nd - 2], big && count == 1);
  };
  if (big && count > 1) {
    for_rows_parallel(outer, count, block);
  } else {
    rows_range(outer, 0, count, block);
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
  size_t nd = d.shape.size();
  if (nd >= 2 && id == 1 && is != 1 && is != 0 && d.s[0][nd - 2] == 1) {
    return copy_transposing(d, src, dst);
  }
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
