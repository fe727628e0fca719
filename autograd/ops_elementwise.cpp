// Elementwise differentiable ops: broadcasting binary ops, scalar ops and
// unary maps. Forward picks a loop in kernels/cpu/elementwise.h; backward
// of a broadcasting op reduces the gradient with sum_to.
#include "autograd/ops.h"
#include "autograd/ops_util.h"
#include "kernels/cpu/elementwise.h"

namespace kbit {
namespace {

using cpu::Binary;
using cpu::Unary;

// A view whose last axis (of size > 1) is not unit-stride, such as a
// transpose, would make the inner loop jump across cache lines: copy it
// first with the tiled copy. Others are read in place.
Tensor unit_inner_stride(const Tensor& t) {
  for (int d = t.dim(); d-- > 0;) {
    if (t.shape()[size_t(d)] == 1) continue;
    return t.strides()[size_t(d)] == 1 ? t : ops::contiguous(t);
  }
  return t;
}

// a op b with numpy broadcasting -> a contiguous result. Fast paths: same
// shape contiguous, one scalar side; else the strided loop (which runs a
// row broadcast such as (N, C) + (C) with a contiguous inner loop).
Tensor binary_forward(Binary op, const Tensor& a_in, const Tensor& b_in,
                      const char* name) {
  ops::check_same_dtype(a_in, b_in, name);
  Shape shape = broadcast_shapes(a_in.shape(), b_in.shape(), name);
  Tensor a = unit_inner_stride(a_in), b = unit_inner_stride(b_in);
  Tensor out = Tensor::empty(shape, a.dtype());
  int64_t n = out.numel();
  // A contiguous operand with the result's element count broadcasts only
  // through leading or size-1 axes: its flat layout is the result's.
  bool ca = a.is_contiguous() && a.numel() == n;
  bool cb = b.is_contiguous() && b.numel() == n;
  dispatch_float(a.dtype(), name, [&](auto* tp) {
    using T = std::remove_pointer_t<decltype(tp)>;
    T* o = out.data<T>();
    if (ca && cb) {
      cpu::binary(op, n, a.data<T>(), b.data<T>(), o);
    } else if (ca && b.numel() == 1) {
      cpu::binary_scalar_b(op, n, a.data<T>(), *b.data<T>(), o);
    } else if (cb && a.numel() == 1) {
      cpu::binary_scalar_a(op, n, *a.data<T>(), b.data<T>(), o);
    } else {
      Tensor va = ops::broadcast_view(a, shape);
      Tensor vb = ops::broadcast_view(b, shape);
      cpu::binary_strided(op, shape, va.data<T>(), va.strides(), vb.data<T>(),
                          vb.strides(), o);
    }
  });
  return out;
}

// What a unary op's backward reads: its input x, its output y, or neither.
bool backward_reads_x(Unary op) {
  return op == Unary::log || op == Unary::relu || op == Unary::gelu ||
         op == Unary::rdiv_scalar || op == Unary::pow_scalar;
}
bool backward_reads_y(Unary op) {
  return op == Unary::exp || op == Unary::sqrt || op == Unary::tanh;
}

// op(a) elementwise -> a contiguous result; records a backward that keeps
// only the x or y it reads.
Tensor unary_op(Unary op, const Tensor& a, double alpha = 0.0) {
  const char* name = cpu::unary_name(op);
  ops::check_float(a, name);
  Tensor x = ops::contiguous(a);
  Tensor out = Tensor::empty(a.shape(), a.dtype());
  dispatch_float(a.dtype(), name, [&](auto* tp) {
    using T = std::remove_pointer_t<decltype(tp)>;
    cpu::unary(op, out.numel(), x.data<T>(), out.data<T>(), alpha);
  });
  if (!needs_grad({a})) return out;

  Tensor xs = backward_reads_x(op) ? x.detach() : Tensor();
  Tensor ys = backward_reads_y(op) ? out.detach() : Tensor();
  return record(out, name, {a}, [op, alpha, xs, ys, name](const Tensor& g) {
    Tensor gc = ops::contiguous(g);
    Tensor gx = Tensor::empty(gc.shape(), gc.dtype(), MemTag::grad);
    dispatch_float(gc.dtype(), name, [&](auto* tp) {
      using T = std::remove_pointer_t<decltype(tp)>;
      const T* xp = xs.defined() ? xs.data<T>() : nullptr;
      const T* yp = ys.defined() ? ys.data<T>() : nullptr;
      cpu::unary_backward(op, gc.numel(), xp, yp, gc.data<T>(), gx.data<T>(),
                          alpha);
    });
    return std::vector<Tensor>{gx};
  });
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(Binary::add, a, b, "add");
  bool ra = a.requires_grad(), rb = b.requires_grad();
  return record(out, "add", {a, b},
                [ra, rb, sa = a.shape(), sb = b.shape()](const Tensor& g) {
                  return std::vector<Tensor>{ra ? sum_to(g, sa) : Tensor(),
                                             rb ? sum_to(g, sb) : Tensor()};
                });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(Binary::sub, a, b, "sub");
  bool ra = a.requires_grad(), rb = b.requires_grad();
  return record(out, "sub", {a, b},
                [ra, rb, sa = a.shape(), sb = b.shape()](const Tensor& g) {
                  return std::vector<Tensor>{
                      ra ? sum_to(g, sa) : Tensor(),
                      rb ? neg(sum_to(g, sb)) : Tensor()};
                });
}

// d(a b)/da = b, d(a b)/db = a: each side keeps the other input.
Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(Binary::mul, a, b, "mul");
  if (!needs_grad({a, b})) return out;
  bool ra = a.requires_grad(), rb = b.requires_grad();
  Tensor ad = rb ? a.detach() : Tensor();
  Tensor bd = ra ? b.detach() : Tensor();
  return record(out, "mul", {a, b},
                [ad, bd, sa = a.shape(), sb = b.shape()](const Tensor& g) {
                  return std::vector<Tensor>{
                      bd.defined() ? sum_to(mul(g, bd), sa) : Tensor(),
                      ad.defined() ? sum_to(mul(g, ad), sb) : Tensor()};
                });
}

// d(a / b)/da = 1 / b, d(a / b)/db = -(a / b) / b: keeps b and the result.
Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(Binary::div, a, b, "div");
  if (!needs_grad({a, b})) return out;
  bool ra = a.requires_grad(), rb = b.requires_grad();
  Tensor bd = b.detach();
  Tensor yd = rb ? out.detach() : Tensor();
  return record(
      out, "div", {a, b},
      [ra, bd, yd, sa = a.shape(), sb = b.shape()](const Tensor& g) {
        Tensor g_over_b = div(g, bd);  // (broadcast shape)
        return std::vector<Tensor>{
            ra ? sum_to(g_over_b, sa) : Tensor(),
            yd.defined() ? neg(sum_to(mul(g_over_b, yd), sb)) : Tensor()};
      });
}

Tensor add_scalar(const Tensor& a, double s) {
  return unary_op(Unary::add_scalar, a, s);
}
Tensor mul_scalar(const Tensor& a, double s) {
  return unary_op(Unary::mul_scalar, a, s);
}
Tensor rsub_scalar(double s, const Tensor& a) {
  return unary_op(Unary::rsub_scalar, a, s);
}
Tensor rdiv_scalar(double s, const Tensor& a) {
  return unary_op(Unary::rdiv_scalar, a, s);
}
Tensor pow_scalar(const Tensor& a, double p) {
  return unary_op(Unary::pow_scalar, a, p);
}
Tensor neg(const Tensor& a) {
  return unary_op(Unary::neg, a);
}
Tensor exp(const Tensor& a) {
  return unary_op(Unary::exp, a);
}
Tensor log(const Tensor& a) {
  return unary_op(Unary::log, a);
}
Tensor sqrt(const Tensor& a) {
  return unary_op(Unary::sqrt, a);
}
Tensor tanh(const Tensor& a) {
  return unary_op(Unary::tanh, a);
}
Tensor relu(const Tensor& a) {
  return unary_op(Unary::relu, a);
}
Tensor gelu(const Tensor& a) {
  return unary_op(Unary::gelu, a);
}

}  // namespace kbit
