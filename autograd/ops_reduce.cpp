// Reductions: sum and mean over axes, and sum_to (the adjoint of
// broadcasting). The forward runs kernels/cpu/reduce.h on a contiguous copy;
// the backward broadcasts the gradient back to the input's shape.
#include <algorithm>

#include "autograd/ops.h"
#include "autograd/ops_util.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/reduce.h"

namespace kbit {
namespace {

// One flag per axis of an ndim tensor: reduced or kept. All axes when `axes`
// is empty.
std::vector<bool> reduce_flags(int ndim, const std::vector<int>& axes,
                               const char* op) {
  std::vector<bool> flags(size_t(ndim), axes.empty());
  for (int axis : axes) {
    int a = normalize_axis(axis, ndim, op);
    KBIT_CHECK(!flags[size_t(a)], "[", op, "] axis ", axis, " given twice");
    flags[size_t(a)] = true;
  }
  return flags;
}

// `shape` with the flagged axes set to 1 (keepdim) or removed.
Shape reduced_shape(const Shape& shape, const std::vector<bool>& flags,
                    bool keepdim) {
  Shape out;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (!flags[d]) {
      out.push_back(shape[d]);
    } else if (keepdim) {
      out.push_back(1);
    }
  }
  return out;
}

// An axis group of the contiguous input: its size and whether it is summed.
struct Segment {
  int64_t size;
  bool reduced;
};

// Adjacent axes with the same flag merge into one segment; size-1 axes drop.
std::vector<Segment> segments(const Shape& shape,
                              const std::vector<bool>& flags) {
  std::vector<Segment> segs;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (!segs.empty() && segs.back().reduced == flags[d]) {
      segs.back().size *= shape[d];
    } else {
      segs.push_back({shape[d], bool(flags[d])});
    }
  }
  return segs;
}

int64_t product(const std::vector<Segment>& segs, size_t begin, size_t end) {
  int64_t n = 1;
  for (size_t i = begin; i < end; ++i) n *= segs[i].size;
  return n;
}

// Sums a over the flagged axes -> a new contiguous tensor of the keepdim
// shape. Each pass sums the last reduced segment as (outer, red, inner).
Tensor sum_flags(const Tensor& a, const std::vector<bool>& flags,
                 const char* op) {
  ops::check_float(a, op);
  Shape out_shape = reduced_shape(a.shape(), flags, true);
  if (shape_numel(out_shape) == 0) return Tensor::zeros(out_shape, a.dtype());
  Tensor cur = ops::contiguous(a);
  std::vector<Segment> segs = segments(a.shape(), flags);
  bool copied = false;
  for (size_t j = segs.size(); j-- > 0;) {
    if (!segs[j].reduced) continue;
    int64_t outer = product(segs, 0, j),
            inner = product(segs, j + 1, segs.size());
    Tensor next = Tensor::empty({outer * inner}, a.dtype());
    dispatch_float(a.dtype(), op, [&](auto* tp) {
      using T = std::remove_pointer_t<decltype(tp)>;
      cpu::sum_mid(outer, segs[j].size, inner, cur.data<T>(), next.data<T>());
    });
    segs.erase(segs.begin() + std::ptrdiff_t(j));
    cur = next;
    copied = true;
  }
  if (!copied) cur = cur.clone();  // only size-1 axes summed
  return cur.view(out_shape);
}

// g of the reduced shape (keepdim or not) broadcast back to `shape`.
Tensor unreduce(const Tensor& g, const Shape& shape,
                const std::vector<bool>& flags) {
  Tensor gk = ops::contiguous(g).view(reduced_shape(shape, flags, true));
  return ops::expand(gk, shape);
}

// t *= s in place; t is a fresh contiguous buffer nothing else holds.
Tensor scale_(Tensor t, double s) {
  dispatch_float(t.dtype(), "mean", [&](auto* tp) {
    using T = std::remove_pointer_t<decltype(tp)>;
    T* p = t.data<T>();
    cpu::unary(cpu::Unary::mul_scalar, t.numel(), p, p, s);
  });
  return t;
}

int64_t reduced_count(const Shape& shape, const std::vector<bool>& flags) {
  int64_t n = 1;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (flags[d]) n *= shape[d];
  }
  return n;
}

}  // namespace

Tensor sum(const Tensor& a, const std::vector<int>& axes, bool keepdim) {
  ops::check_float(a, "sum");
  std::vector<bool> flags = reduce_flags(a.dim(), axes, "sum");
  Tensor out = sum_flags(a, flags, "sum");
  out = out.view(reduced_shape(a.shape(), flags, keepdim));
  return record(out, "sum", {a}, [flags, shape = a.shape()](const Tensor& g) {
    return std::vector<Tensor>{unreduce(g, shape, flags)};
  });
}

Tensor mean(const Tensor& a, const std::vector<int>& axes, bool keepdim) {
  ops::check_float(a, "mean");
  std::vector<bool> flags = reduce_flags(a.dim(), axes, "mean");
  double scale = 1.0 / double(reduced_count(a.shape(), flags));
  Tensor out = scale_(sum_flags(a, flags, "mean"), scale);
  out = out.view(reduced_shape(a.shape(), flags, keepdim));
  return record(
      out, "mean", {a}, [flags, scale, shape = a.shape()](const Tensor& g) {
        return std::vector<Tensor>{scale_(unreduce(g, shape, flags), scale)};
      });
}

Tensor sum_to(const Tensor& a, const Shape& shape) {
  ops::check_float(a, "sum_to");
  const Shape& from = a.shape();
  bool ok = shape.size() <= from.size();
  for (size_t d = 0; ok && d < shape.size(); ++d) {
    int64_t f = from[from.size() - shape.size() + d];
    ok = shape[d] == f || shape[d] == 1;
  }
  KBIT_CHECK(ok, "[sum_to] expected a shape that broadcasts to ",
             shape_str(from), ", got ", shape_str(shape));
  if (shape == from) return a;

  size_t lead = from.size() - shape.size();
  std::vector<bool> flags(from.size(), true);
  for (size_t d = 0; d < shape.size(); ++d) {
    flags[lead + d] = shape[d] == 1 && from[lead + d] != 1;
  }
  Tensor out = sum_flags(a, flags, "sum_to").view(shape);
  return record(out, "sum_to", {a}, [from](const Tensor& g) {
    return std::vector<Tensor>{ops::expand(ops::contiguous(g), from)};
  });
}

}  // namespace kbit
