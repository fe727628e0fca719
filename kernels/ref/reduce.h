// Reference sums: a full multi-index walk, accumulated in double. The
// oracles of kernels/cpu/reduce.h.
#pragma once

#include <vector>

#include "kernels/ref/elementwise.h"

namespace kbit::ref {

// x (shape) contiguous -> out (shape with every axis where reduce[d] set to
// 1) contiguous.
template <typename T>
void sum_axes(const Shape& shape, const T* x, const std::vector<bool>& reduce,
              T* out) {
  Shape out_shape = shape;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (reduce[d]) out_shape[d] = 1;
  }
  std::vector<double> acc(size_t(shape_numel(out_shape)), 0.0);
  for (int64_t i = 0; i < shape_numel(shape); ++i) {
    acc[size_t(broadcast_offset(unravel(i, shape), out_shape))] += x[i];
  }
  for (size_t i = 0; i < acc.size(); ++i) out[i] = T(acc[i]);
}

// x (outer, red, inner) -> out (outer, inner).
template <typename T>
void sum_mid(int64_t outer, int64_t red, int64_t inner, const T* x, T* out) {
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      double acc = 0;
      for (int64_t r = 0; r < red; ++r) acc += x[(o * red + r) * inner + i];
      out[o * inner + i] = T(acc);
    }
  }
}

}  // namespace kbit::ref
