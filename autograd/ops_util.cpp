#include "autograd/ops_util.h"

#include "kernels/cpu/elementwise.h"

namespace kbit::ops {

void check_float(const Tensor& a, const char* op) {
  KBIT_CHECK(a.defined(), "[", op, "] expected a tensor, got an undefined one");
  KBIT_CHECK(a.device() == Device::cpu, "[", op,
             "] expected a cpu tensor, got ", device_name(a.device()));
  KBIT_CHECK(a.dtype() == DType::f32 || a.dtype() == DType::f64, "[", op,
             "] expected dtype f32 or f64, got ", dtype_name(a.dtype()));
}

void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  KBIT_CHECK(a.defined() && b.defined(), "[", op,
             "] expected two tensors, got an undefined one");
  KBIT_CHECK(a.dtype() == b.dtype(), "[", op,
             "] expected inputs of one dtype, got ", dtype_name(a.dtype()),
             " and ", dtype_name(b.dtype()));
  check_float(a, op);
  check_float(b, op);
}

void copy_into(const Tensor& dst, const Tensor& src) {
  KBIT_CHECK(dst.shape() == src.shape(), "[copy] expected source shape ",
             shape_str(dst.shape()), ", got ", shape_str(src.shape()));
  bool fast = dst.dtype() == src.dtype() &&
              (dst.dtype() == DType::f32 || dst.dtype() == DType::f64);
  if (!fast) return dst.copy_(src);
  dispatch_float(dst.dtype(), "copy", [&](auto* tp) {
    using T = std::remove_pointer_t<decltype(tp)>;
    cpu::copy_strided(dst.shape(), src.data<T>(), src.strides(), dst.data<T>(),
                      dst.strides());
  });
}

Tensor contiguous(const Tensor& t) {
  if (t.is_contiguous()) return t;
  Tensor out = Tensor::empty(t.shape(), t.dtype(), t.tag());
  copy_into(out, t);
  return out;
}

Tensor broadcast_view(const Tensor& t, const Shape& shape) {
  KBIT_CHECK(broadcast_shapes(t.shape(), shape, "broadcast") == shape,
             "[broadcast] expected a shape that ", shape_str(t.shape()),
             " broadcasts to, got ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>(*t.impl());
  impl->requires_grad = false;
  impl->grad = nullptr;
  impl->grad_fn = nullptr;
  size_t lead = shape.size() - size_t(t.dim());
  impl->shape = shape;
  impl->strides.assign(shape.size(), 0);
  for (size_t d = 0; d < size_t(t.dim()); ++d) {
    bool grows = t.shape()[d] == 1 && shape[lead + d] != 1;
    impl->strides[lead + d] = grows ? 0 : t.strides()[d];
  }
  return Tensor(impl);
}

Tensor expand(const Tensor& t, const Shape& shape) {
  Tensor out = Tensor::empty(shape, t.dtype());
  copy_into(out, broadcast_view(t, shape));
  return out;
}

}  // namespace kbit::ops
