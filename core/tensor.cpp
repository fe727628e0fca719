#include "core/tensor.h"

#include <algorithm>
#include <cstring>

namespace kbit {
namespace {

double load(const void* base, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::f32:
      return static_cast<const float*>(base)[i];
    case DType::f64:
      return static_cast<const double*>(base)[i];
    case DType::f16:
      return f16_to_f32(static_cast<const f16_t*>(base)[i]);
    case DType::bf16:
      return bf16_to_f32(static_cast<const bf16_t*>(base)[i]);
    case DType::i8:
      return static_cast<const int8_t*>(base)[i];
    case DType::u8:
      return static_cast<const uint8_t*>(base)[i];
    case DType::i32:
      return static_cast<const int32_t*>(base)[i];
    case DType::i64:
      return double(static_cast<const int64_t*>(base)[i]);
  }
  return 0;
}

void store(void* base, DType dtype, int64_t i, double v) {
  switch (dtype) {
    case DType::f32:
      static_cast<float*>(base)[i] = float(v);
      break;
    case DType::f64:
      static_cast<double*>(base)[i] = v;
      break;
    case DType::f16:
      static_cast<f16_t*>(base)[i] = f32_to_f16(float(v));
      break;
    case DType::bf16:
      static_cast<bf16_t*>(base)[i] = f32_to_bf16(float(v));
      break;
    case DType::i8:
      static_cast<int8_t*>(base)[i] = int8_t(v);
      break;
    case DType::u8:
      static_cast<uint8_t*>(base)[i] = uint8_t(v);
      break;
    case DType::i32:
      static_cast<int32_t*>(base)[i] = int32_t(v);
      break;
    case DType::i64:
      static_cast<int64_t*>(base)[i] = int64_t(v);
      break;
  }
}

// Calls f(flat_index, element_offset) for every element in row-major order.
template <typename F>
void for_each_offset(const Shape& shape, const Shape& strides, int64_t offset,
                     F&& f) {
  int64_t n = shape_numel(shape);
  if (n == 0) return;
  int nd = int(shape.size());
  std::vector<int64_t> idx(size_t(nd), 0);
  int64_t off = offset;
  for (int64_t i = 0; i < n; ++i) {
    f(i, off);
    for (int d = nd - 1; d >= 0; --d) {
      if (++idx[size_t(d)] < shape[size_t(d)]) {
        off += strides[size_t(d)];
        break;
      }
      off -= strides[size_t(d)] * (shape[size_t(d)] - 1);
      idx[size_t(d)] = 0;
    }
  }
}

std::shared_ptr<TensorImpl> new_impl(const Shape& shape, DType dtype,
                                     MemTag tag) {
  for (int64_t d : shape) {
    KBIT_CHECK(d >= 0, "[tensor] expected non-negative sizes, got ",
               shape_str(shape));
  }
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(
      size_t(shape_numel(shape)) * dtype_size(dtype), tag);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return impl;
}

}  // namespace

Tensor Tensor::empty(const Shape& shape, DType dtype, MemTag tag) {
  return Tensor(new_impl(shape, dtype, tag));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, MemTag tag) {
  Tensor t = empty(shape, dtype, tag);
  // Large buffers (optimizer states) are first touched by every thread: one
  // thread alone page-faults 800 MB in seconds.
  constexpr size_t kParallelBytes = size_t(1) << 22;
  constexpr size_t kChunk = size_t(1) << 20;
  char* p = static_cast<char*>(t.raw_data());
  size_t n = t.nbytes();
  int64_t chunks = int64_t((n + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static) if (n >= kParallelBytes)
  for (int64_t c = 0; c < chunks; ++c) {
    size_t begin = size_t(c) * kChunk;
    std::memset(p + begin, 0, std::min(kChunk, n - begin));
  }
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, MemTag tag) {
  Tensor t = empty(shape, dtype, tag);
  t.fill_(value);
  return t;
}

template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape,
                           MemTag tag) {
  KBIT_CHECK(int64_t(values.size()) == shape_numel(shape), "[tensor] expected ",
             shape_numel(shape), " values for shape ", shape_str(shape),
             ", got ", values.size());
  Tensor t = empty(shape, DTypeOf<T>::value, tag);
  if (!values.empty()) {
    std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(T));
  }
  return t;
}
template Tensor Tensor::from_vector(const std::vector<float>&, const Shape&,
                                    MemTag);
template Tensor Tensor::from_vector(const std::vector<double>&, const Shape&,
                                    MemTag);
template Tensor Tensor::from_vector(const std::vector<int8_t>&, const Shape&,
                                    MemTag);
template Tensor Tensor::from_vector(const std::vector<uint8_t>&, const Shape&,
                                    MemTag);
template Tensor Tensor::from_vector(const std::vector<int32_t>&, const Shape&,
                                    MemTag);
template Tensor Tensor::from_vector(const std::vector<int64_t>&, const Shape&,
                                    MemTag);

Tensor Tensor::randn(const Shape& shape, Philox& rng, DType dtype, double mean,
                     double std, MemTag tag) {
  Tensor t = empty(shape, dtype, tag);
  dispatch_float(dtype, "randn", [&](auto* tp) {
    using T = std::remove_pointer_t<decltype(tp)>;
    rng.fill_normal(t.data<T>(), t.numel(), T(mean), T(std));
  });
  return t;
}

Tensor Tensor::rand(const Shape& shape, Philox& rng, DType dtype, double lo,
                    double hi, MemTag tag) {
  Tensor t = empty(shape, dtype, tag);
  dispatch_float(dtype, "rand", [&](auto* tp) {
    using T = std::remove_pointer_t<decltype(tp)>;
    rng.fill_uniform(t.data<T>(), t.numel(), T(lo), T(hi));
  });
  return t;
}

int64_t Tensor::shape(int axis) const {
  return shape()[size_t(normalize_axis(axis, dim(), "shape"))];
}

template <typename T>
T* Tensor::data() const {
  KBIT_CHECK(dtype() == DTypeOf<T>::value, "[tensor] data<",
             dtype_name(DTypeOf<T>::value), ">() on a tensor of dtype ",
             dtype_name(dtype()));
  return static_cast<T*>(raw_data());
}
template float* Tensor::data<float>() const;
template double* Tensor::data<double>() const;
template f16_t* Tensor::data<f16_t>() const;
template bf16_t* Tensor::data<bf16_t>() const;
template int8_t* Tensor::data<int8_t>() const;
template uint8_t* Tensor::data<uint8_t>() const;
template int32_t* Tensor::data<int32_t>() const;
template int64_t* Tensor::data<int64_t>() const;

void* Tensor::raw_data() const {
  const TensorImpl& t = checked();
  return static_cast<char*>(t.storage->data()) +
         t.offset * int64_t(dtype_size(t.dtype));
}

bool Tensor::is_contiguous() const {
  const TensorImpl& t = checked();
  int64_t expected = 1;
  for (size_t i = t.shape.size(); i-- > 0;) {
    if (t.shape[i] == 1) continue;
    if (t.strides[i] != expected) return false;
    expected *= t.shape[i];
  }
  return true;
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor out = empty(shape(), dtype(), tag());
  out.copy_(*this);
  return out;
}

Tensor Tensor::clone(MemTag tag) const {
  Tensor out = empty(shape(), dtype(), tag);
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == this->dtype()) return *this;
  Tensor out = empty(shape(), dtype, tag());
  out.copy_(*this);
  return out;
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>(checked());
  impl->requires_grad = false;
  impl->grad = nullptr;
  impl->grad_fn = nullptr;
  return Tensor(impl);
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  std::vector<T> out(static_cast<size_t>(numel()));
  const TensorImpl& t = checked();
  const void* base = t.storage->data();
  for_each_offset(t.shape, t.strides, t.offset, [&](int64_t i, int64_t off) {
    out[size_t(i)] = T(load(base, t.dtype, off));
  });
  return out;
}
template std::vector<float> Tensor::to_vector() const;
template std::vector<double> Tensor::to_vector() const;
template std::vector<int32_t> Tensor::to_vector() const;
template std::vector<int64_t> Tensor::to_vector() const;
template std::vector<int8_t> Tensor::to_vector() const;
template std::vector<uint8_t> Tensor::to_vector() const;

double Tensor::item() const {
  KBIT_CHECK(numel() == 1, "[item] expected a tensor of one element, got ",
             shape_str(shape()));
  return load(storage()->data(), dtype(), offset());
}

double Tensor::at(const std::vector<int64_t>& index) const {
  KBIT_CHECK(int(index.size()) == dim(), "[at] expected ", dim(),
             " indices, got ", index.size());
  int64_t off = offset();
  for (size_t i = 0; i < index.size(); ++i) {
    KBIT_CHECK(index[i] >= 0 && index[i] < shape()[i], "[at] index ", index[i],
               " out of range for axis ", i, " of size ", shape()[i]);
    off += index[i] * strides()[i];
  }
  return load(storage()->data(), dtype(), off);
}

Tensor Tensor::view(const Shape& new_shape) const {
  KBIT_CHECK(is_contiguous(), "[view] expected a contiguous tensor of shape ",
             shape_str(shape()));
  Shape s = new_shape;
  int64_t known = 1;
  int infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      KBIT_CHECK(infer < 0, "[view] at most one -1 allowed, got ",
                 shape_str(new_shape));
      infer = int(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0 && known > 0) s[size_t(infer)] = numel() / known;
  KBIT_CHECK(shape_numel(s) == numel(), "[view] cannot view ",
             shape_str(shape()), " (", numel(), " elements) as ",
             shape_str(new_shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = storage();
  impl->shape = s;
  impl->strides = contiguous_strides(s);
  impl->offset = offset();
  impl->dtype = dtype();
  return Tensor(impl);
}

Tensor Tensor::transpose_view(int axis0, int axis1) const {
  std::vector<int> axes(static_cast<size_t>(dim()));
  for (int i = 0; i < dim(); ++i) axes[size_t(i)] = i;
  std::swap(axes[size_t(normalize_axis(axis0, dim(), "transpose"))],
            axes[size_t(normalize_axis(axis1, dim(), "transpose"))]);
  return permute_view(axes);
}

Tensor Tensor::permute_view(const std::vector<int>& axes) const {
  KBIT_CHECK(int(axes.size()) == dim(), "[permute] expected ", dim(),
             " axes, got ", axes.size());
  std::vector<bool> seen(static_cast<size_t>(dim()), false);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = storage();
  impl->offset = offset();
  impl->dtype = dtype();
  for (int a : axes) {
    int n = normalize_axis(a, dim(), "permute");
    KBIT_CHECK(!seen[size_t(n)], "[permute] axis ", a, " given twice");
    seen[size_t(n)] = true;
    impl->shape.push_back(shape()[size_t(n)]);
    impl->strides.push_back(strides()[size_t(n)]);
  }
  return Tensor(impl);
}

Tensor Tensor::slice_view(int axis, int64_t start, int64_t end) const {
  int a = normalize_axis(axis, dim(), "slice");
  int64_t size = shape()[size_t(a)];
  KBIT_CHECK(0 <= start && start <= end && end <= size,
             "[slice] expected 0 <= start <= end <= ", size, " on axis ", axis,
             ", got start ", start, ", end ", end);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = storage();
  impl->shape = shape();
  impl->strides = strides();
  impl->shape[size_t(a)] = end - start;
  impl->offset = offset() + start * strides()[size_t(a)];
  impl->dtype = dtype();
  return Tensor(impl);
}

void Tensor::fill_(double value) const {
  const TensorImpl& t = checked();
  void* base = t.storage->data();
  if (t.dtype == DType::f32 && is_contiguous()) {
    std::fill_n(data<float>(), numel(), float(value));
    return;
  }
  for_each_offset(t.shape, t.strides, t.offset, [&](int64_t, int64_t off) {
    store(base, t.dtype, off, value);
  });
}

void Tensor::copy_(const Tensor& src) const {
  KBIT_CHECK(src.shape() == shape(), "[copy] expected source shape ",
             shape_str(shape()), ", got ", shape_str(src.shape()));
  if (src.dtype() == dtype() && src.is_contiguous() && is_contiguous()) {
    std::memmove(raw_data(), src.raw_data(), nbytes());
    return;
  }
  if (numel() == 0) return;
  const TensorImpl& s = *src.impl();
  const TensorImpl& d = checked();
  if (d.storage == s.storage) {  // possibly overlapping: go through a copy
    copy_(src.clone(MemTag::workspace));
    return;
  }

  // Walk the rows (all axes but the last) with an odometer on both layouts;
  // each row is one strided inner loop.
  int nd = int(d.shape.size());
  int64_t cols = nd == 0 ? 1 : d.shape.back();
  int64_t ss = nd == 0 ? 0 : s.strides.back();
  int64_t ds = nd == 0 ? 0 : d.strides.back();
  int64_t rows = numel() / cols;
  std::vector<int64_t> idx(size_t(std::max(nd - 1, 0)), 0);
  int64_t soff = s.offset, doff = d.offset;
  const void* sbase = s.storage->data();
  void* dbase = d.storage->data();
  bool f32 = s.dtype == DType::f32 && d.dtype == DType::f32;
  for (int64_t r = 0; r < rows; ++r) {
    if (f32) {
      const float* sp = static_cast<const float*>(sbase) + soff;
      float* dp = static_cast<float*>(dbase) + doff;
      for (int64_t j = 0; j < cols; ++j) dp[j * ds] = sp[j * ss];
    } else {
      for (int64_t j = 0; j < cols; ++j) {
        store(dbase, d.dtype, doff + j * ds,
              load(sbase, s.dtype, soff + j * ss));
      }
    }
    for (int a = nd - 2; a >= 0; --a) {  // next row
      size_t ua = size_t(a);
      if (++idx[ua] < d.shape[ua]) {
        soff += s.strides[ua];
        doff += d.strides[ua];
        break;
      }
      soff -= s.strides[ua] * (d.shape[ua] - 1);
      doff -= d.strides[ua] * (d.shape[ua] - 1);
      idx[ua] = 0;
    }
  }
}

const Tensor& Tensor::set_requires_grad(bool on) const {
  KBIT_CHECK(!on || is_floating(dtype()),
             "[requires_grad] expected a floating dtype, got ",
             dtype_name(dtype()));
  checked().requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const {
  return Tensor(checked().grad);
}

void Tensor::set_grad(const Tensor& grad) const {
  if (grad.defined()) {
    KBIT_CHECK(grad.shape() == shape(), "[grad] expected shape ",
               shape_str(shape()), ", got ", shape_str(grad.shape()));
  }
  checked().grad = grad.impl_ptr();
}

void Tensor::zero_grad() const {
  checked().grad = nullptr;
}

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  return kbit::str("Tensor(", dtype_name(dtype()), ", ", shape_str(shape()),
                   ")");
}

}  // namespace kbit
