// Helpers shared by the differentiable ops: input checks, fast layout
// copies and broadcast views. None of them records autograd history.
#pragma once

#include "core/tensor.h"

namespace kbit::ops {

// Throws "[op] expected dtype f32 or f64, got i32" (or a non-cpu device).
void check_float(const Tensor& a, const char* op);
// Both float, one dtype: "[op] expected inputs of one dtype, got f32 and f64".
void check_same_dtype(const Tensor& a, const Tensor& b, const char* op);

// dst = src elementwise; same shape, any layouts (src may broadcast with
// stride 0). Float dtypes take the fast strided loop.
void copy_into(const Tensor& dst, const Tensor& src);
// `t` itself when contiguous, else a contiguous copy (same tag).
Tensor contiguous(const Tensor& t);
// `t` viewed at `shape` by numpy broadcasting: stride 0 on new leading axes
// and on size-1 axes that grow. Shares storage; `shape` must be a broadcast
// of t's shape.
Tensor broadcast_view(const Tensor& t, const Shape& shape);
// A new contiguous tensor: `t` broadcast to `shape`.
Tensor expand(const Tensor& t, const Shape& shape);

}  // namespace kbit::ops
