// Tensor: a handle to shared Storage with shape, strides, offset and dtype,
// plus the autograd fields (requires_grad, grad, grad_fn).
//
// Copies of a Tensor share one TensorImpl. Views (view, transpose_view,
// permute_view, slice_view) share storage; contiguous() copies when needed.
// Methods here do not record autograd history: the differentiable ops are in
// autograd/ops.h.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/philox.h"
#include "core/shape.h"
#include "core/storage.h"

namespace kbit {

struct Node;  // autograd/node.h

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;       // in elements
  int64_t offset = 0;  // in elements
  DType dtype = DType::f32;
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;  // leaves only; same shape, tag grad
  std::shared_ptr<Node> grad_fn;     // set on results of recorded ops
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // Factories. New memory is tagged `tag` for the memory accounting.
  static Tensor empty(const Shape& shape, DType dtype = DType::f32,
                      MemTag tag = MemTag::activation);
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32,
                      MemTag tag = MemTag::activation);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32,
                     MemTag tag = MemTag::activation);
  static Tensor ones(const Shape& shape, DType dtype = DType::f32,
                     MemTag tag = MemTag::activation) {
    return full(shape, 1.0, dtype, tag);
  }
  template <typename T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape,
                            MemTag tag = MemTag::activation);
  // Draws from rng (f32 or f64).
  static Tensor randn(const Shape& shape, Philox& rng, DType dtype = DType::f32,
                      double mean = 0.0, double std = 1.0,
                      MemTag tag = MemTag::activation);
  static Tensor rand(const Shape& shape, Philox& rng, DType dtype = DType::f32,
                     double lo = 0.0, double hi = 1.0,
                     MemTag tag = MemTag::activation);

  bool defined() const { return impl_ != nullptr; }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

  const Shape& shape() const { return checked().shape; }
  int64_t shape(int axis) const;  // negative axes count from the end
  const Shape& strides() const { return checked().strides; }
  int64_t offset() const { return checked().offset; }
  int dim() const { return int(shape().size()); }
  int64_t numel() const { return shape_numel(shape()); }
  DType dtype() const { return checked().dtype; }
  Device device() const { return checked().storage->device(); }
  MemTag tag() const { return checked().storage->tag(); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype()); }
  const std::shared_ptr<Storage>& storage() const { return checked().storage; }

  // Typed pointer to the first element; throws if T is not the dtype.
  template <typename T>
  T* data() const;
  void* raw_data() const;

  bool is_contiguous() const;
  Tensor contiguous() const;  // self when already contiguous
  Tensor clone(MemTag tag = MemTag::activation) const;
  Tensor to(DType dtype) const;  // converting copy (self when same dtype)
  Tensor detach() const;         // shares storage, no autograd history

  // Elements as a flat vector in row-major order (any layout, any dtype).
  template <typename T>
  std::vector<T> to_vector() const;
  double item() const;  // the one element of a 1-element tensor
  double at(const std::vector<int64_t>& index) const;

  // Views without autograd history.
  Tensor view(const Shape& shape) const;  // contiguous only; one -1 allowed
  Tensor transpose_view(int axis0, int axis1) const;
  Tensor permute_view(const std::vector<int>& axes) const;
  Tensor slice_view(int axis, int64_t start, int64_t end) const;

  // In-place data operations without autograd history.
  void fill_(double value) const;
  void copy_(const Tensor& src) const;  // same shape; converts dtype

  // Autograd fields.
  bool requires_grad() const { return checked().requires_grad; }
  const Tensor& set_requires_grad(bool on) const;
  Tensor grad() const;
  void set_grad(const Tensor& grad) const;
  void zero_grad() const;  // drops the gradient
  const std::shared_ptr<Node>& grad_fn() const { return checked().grad_fn; }
  bool is_leaf() const { return grad_fn() == nullptr; }
  // (Backpropagation is kbit::backward in autograd/engine.h.)

  std::string str() const;  // "Tensor(f32, (2, 3))"

 private:
  TensorImpl& checked() const {
    KBIT_CHECK(impl_, "[tensor] used an undefined tensor");
    return *impl_;
  }
  std::shared_ptr<TensorImpl> impl_;
};

// Calls f with a null pointer of the C++ type of `dtype` (f32 or f64 only);
// used to write one template for both float types.
template <typename F>
void dispatch_float(DType dtype, const char* op, F&& f) {
  if (dtype == DType::f32) {
    f(static_cast<float*>(nullptr));
  } else if (dtype == DType::f64) {
    f(static_cast<double*>(nullptr));
  } else {
    throw Error(
        str("[", op, "] expected dtype f32 or f64, got ", dtype_name(dtype)));
  }
}

}  // namespace kbit
