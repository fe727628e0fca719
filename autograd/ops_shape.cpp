// Shape ops: reshape, transpose, permute and slice return views of their
// input (sharing storage) with history; concat copies. Backward maps the
// gradient back to the input's layout: slice scatters into zeros, concat
// slices.
#include "autograd/ops.h"
#include "autograd/ops_util.h"

namespace kbit {
namespace {

// `shape` with its one -1 resolved for numel elements.
Shape resolve_shape(const Shape& from, const Shape& shape) {
  Shape s = shape;
  int64_t known = 1;
  int infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      KBIT_CHECK(infer < 0, "[reshape] expected at most one -1, got ",
                 shape_str(shape));
      infer = int(i);
    } else {
      KBIT_CHECK(s[i] >= 0, "[reshape] expected sizes >= 0 or one -1, got ",
                 shape_str(shape));
      known *= s[i];
    }
  }
  int64_t n = shape_numel(from);
  if (infer >= 0 && known > 0 && n % known == 0) s[size_t(infer)] = n / known;
  KBIT_CHECK(shape_numel(s) == n && (infer < 0 || s[size_t(infer)] >= 0),
             "[reshape] cannot reshape ", shape_str(from), " (", n,
             " elements) to ", shape_str(shape));
  return s;
}

}  // namespace

Tensor reshape(const Tensor& a, const Shape& shape) {
  Shape to = resolve_shape(a.shape(), shape);
  Tensor out = ops::contiguous(a).view(to);
  return record(out, "reshape", {a}, [from = a.shape()](const Tensor& g) {
    return std::vector<Tensor>{ops::contiguous(g).view(from)};
  });
}

Tensor transpose(const Tensor& a, int axis0, int axis1) {
  std::vector<int> axes(size_t(a.dim()));
  for (int i = 0; i < a.dim(); ++i) axes[size_t(i)] = i;
  std::swap(axes[size_t(normalize_axis(axis0, a.dim(), "transpose"))],
            axes[size_t(normalize_axis(axis1, a.dim(), "transpose"))]);
  return permute(a, axes);
}

Tensor permute(const Tensor& a, const std::vector<int>& axes) {
  Tensor out = a.permute_view(axes);  // checks the axes
  std::vector<int> inverse(axes.size());
  for (size_t i = 0; i < axes.size(); ++i) {
    inverse[size_t(normalize_axis(axes[i], a.dim(), "permute"))] = int(i);
  }
  return record(out, "permute", {a}, [inverse](const Tensor& g) {
    return std::vector<Tensor>{ops::contiguous(g.permute_view(inverse))};
  });
}

Tensor slice(const Tensor& a, int axis, int64_t start, int64_t end) {
  Tensor out = a.slice_view(axis, start, end);  // checks the range
  return record(out, "slice", {a},
                [axis, start, end, shape = a.shape()](const Tensor& g) {
                  Tensor ga = Tensor::zeros(shape, g.dtype(), MemTag::grad);
                  ops::copy_into(ga.slice_view(axis, start, end), g);
                  return std::vector<Tensor>{ga};
                });
}

Tensor concat(const std::vector<Tensor>& parts, int axis) {
  KBIT_CHECK(!parts.empty(), "[concat] expected at least one tensor, got 0");
  const Tensor& first = parts[0];
  int a = normalize_axis(axis, first.dim(), "concat");
  Shape shape = first.shape();
  shape[size_t(a)] = 0;
  std::vector<int64_t> offsets;  // start of each part on the axis
  for (const Tensor& p : parts) {
    KBIT_CHECK(p.dtype() == first.dtype(),
               "[concat] expected inputs of one dtype, got ",
               dtype_name(first.dtype()), " and ", dtype_name(p.dtype()));
    bool same = p.dim() == first.dim();
    for (int d = 0; same && d < p.dim(); ++d) {
      same = d == a || p.shape()[size_t(d)] == first.shape()[size_t(d)];
    }
    KBIT_CHECK(same, "[concat] expected shapes equal except on axis ", axis,
               ", got ", shape_str(first.shape()), " and ",
               shape_str(p.shape()));
    offsets.push_back(shape[size_t(a)]);
    shape[size_t(a)] += p.shape()[size_t(a)];
  }

  Tensor out = Tensor::empty(shape, first.dtype());
  for (size_t i = 0; i < parts.size(); ++i) {
    int64_t b = offsets[i], e = b + parts[i].shape()[size_t(a)];
    ops::copy_into(out.slice_view(a, b, e), parts[i]);
  }
  return record(out, "concat", parts, [a, offsets](const Tensor& g) {
    std::vector<Tensor> grads;
    for (size_t i = 0; i < offsets.size(); ++i) {
      int64_t e =
          i + 1 < offsets.size() ? offsets[i + 1] : g.shape()[size_t(a)];
      grads.push_back(ops::contiguous(g.slice_view(a, offsets[i], e)));
    }
    return grads;
  });
}

}  // namespace kbit
