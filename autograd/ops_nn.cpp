// Differentiable neural-network ops: matmul, linear, bias_gelu, softmax,
// log_softmax, cross_entropy, layer_norm, embedding, dropout. Each validates
// its inputs, computes with a kernel from kernels/cpu, and records a backward
// closure that keeps only what it needs. These ops use no other differentiable
// op.
//
// Shapes: B batch (the leading axes, flattened), M, K, N the matrix sizes
// of (M, K) x (K, N), R rows (all axes but the last, flattened), C the last
// axis (channels or classes), V the vocabulary.
#include <algorithm>
#include <cmath>

#include "autograd/ops.h"
#include "core/error.h"
#include "kernels/cpu/bias.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/dropout.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/layernorm.h"
#include "kernels/cpu/softmax.h"

namespace kbit {
namespace {

void check_float(const Tensor& t, const char* op, const char* what) {
  KBIT_CHECK(t.defined(), "[", op, "] expected a defined ", what);
  KBIT_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64, "[", op,
             "] expected ", what, " of dtype f32 or f64, got ",
             dtype_name(t.dtype()));
}

void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  KBIT_CHECK(a.dtype() == b.dtype(), "[", op, "] expected one dtype, got ",
             dtype_name(a.dtype()), " and ", dtype_name(b.dtype()));
}

void check_index_dtype(const Tensor& t, const char* op, const char* what) {
  KBIT_CHECK(t.dtype() == DType::i32 || t.dtype() == DType::i64, "[", op,
             "] expected ", what, " of dtype i32 or i64, got ",
             dtype_name(t.dtype()));
}

// Calls f with a null pointer of the index type of t (i32 or i64).
template <typename F>
void dispatch_index(const Tensor& t, F&& f) {
  if (t.dtype() == DType::i32) {
    f(static_cast<int32_t*>(nullptr));
  } else {
    f(static_cast<int64_t*>(nullptr));
  }
}

// Throws naming the first index outside [0, size): "[op] expected <what>
// in [0, size), got v at position i".
template <typename I>
void check_range(const I* idx, int64_t n, int64_t size, const char* op,
                 const char* what, const char* where) {
  for (int64_t i = 0; i < n; ++i) {
    KBIT_CHECK(idx[i] >= 0 && int64_t(idx[i]) < size, "[", op, "] expected ",
               what, " in [0, ", size, "), got ", int64_t(idx[i]), " at ",
               where, " ", i);
  }
}

Shape with_last(Shape s, int64_t last) {
  s.back() = last;
  return s;
}

// ---- GEMM operands ----

// A (..., rows, cols) operand as the GEMM reads it: the tensor (the input,
// or a contiguous copy), whether it is stored transposed (cols, rows), the
// row stride of the stored matrix and the element stride between matrices.
struct Operand {
  Tensor t;
  bool trans = false;
  int64_t ld = 1;
  int64_t batch_stride = 0;
};

// The one stride between matrices of the leading axes, when they flatten.
bool flat_batch_stride(const Tensor& t, int64_t* stride) {
  *stride = 0;
  int64_t expected = -1;
  for (int i = t.dim() - 3; i >= 0; --i) {
    int64_t size = t.shape()[size_t(i)], s = t.strides()[size_t(i)];
    if (size == 1) continue;
    if (expected < 0) {
      *stride = s;
    } else if (s != expected) {
      return false;
    }
    expected = s * size;
  }
  return true;
}

// Row-major or transposed (strides swapped) matrices are read in place;
// any other layout is copied.
Operand operand(const Tensor& t) {
  int d = t.dim();
  int64_t rows = t.shape()[size_t(d - 2)], cols = t.shape()[size_t(d - 1)];
  int64_t sr = t.strides()[size_t(d - 2)], sc = t.strides()[size_t(d - 1)];
  int64_t bs = 0;
  if (flat_batch_stride(t, &bs)) {
    if (sc == 1 && sr >= std::max<int64_t>(cols, 1)) return {t, false, sr, bs};
    if (sr == 1 && sc >= std::max<int64_t>(rows, 1)) return {t, true, sc, bs};
  }
  return {t.contiguous(), false, std::max<int64_t>(cols, 1), rows * cols};
}

// Matrix i of a batched operand alone: a new handle at its element offset
// (the input's own handle is untouched).
Operand batch_item(Operand o, int64_t i) {
  o.t = o.t.detach();
  o.t.impl()->offset += i * o.batch_stride;
  o.batch_stride = 0;
  return o;
}

Operand transposed(Operand o) {
  o.trans = !o.trans;
  return o;
}

// A contiguous (rows, cols) matrix (or a batch of them) as an operand.
Operand plain(const Tensor& t, int64_t rows, int64_t cols) {
  return {t, false, std::max<int64_t>(cols, 1), rows * cols};
}

// C (batch, M, N), contiguous, = op(A) op(B) + beta C. A stride of 0 in an
// operand shares its matrix across the batch.
template <typename T>
void gemm(const Operand& a, const Operand& b, T* c, int64_t batch, int64_t M,
          int64_t N, int64_t K, double beta = 0.0) {
  cpu::GemmArgs g;
  g.trans_a = a.trans;
  g.trans_b = b.trans;
  g.M = M;
  g.N = N;
  g.K = K;
  g.lda = a.ld;
  g.ldb = b.ld;
  g.ldc = std::max<int64_t>(N, 1);
  g.beta = beta;
  if (M == 0 || N == 0) return;
  if (K == 0) {  // an empty sum: C = beta C, without asking the library
    if (beta == 0.0) std::fill(c, c + batch * M * N, T(0));
    return;
  }
  const T* pa = a.t.data<T>();
  const T* pb = b.t.data<T>();
  if (batch == 1) {
    cpu::gemm(g, pa, pb, c);
  } else {
    cpu::gemm_batched(g, batch, pa, a.batch_stride, pb, b.batch_stride, c,
                      M * N);
  }
}

// Whether a batch of (M, K) operands is one (batch * M, K) matrix.
bool flattens(const Operand& a, int64_t M) {
  return !a.trans && a.batch_stride == M * a.ld;
}

// ---- matmul ----

struct MatmulDims {
  int64_t batch, M, N, K;
  bool shared_b;  // b is 2-D and used by every batch
};

MatmulDims matmul_dims(const Tensor& a, const Tensor& b) {
  check_float(a, "matmul", "a");
  check_float(b, "matmul", "b");
  check_same_dtype(a, b, "matmul");
  KBIT_CHECK(a.dim() >= 2 && b.dim() >= 2,
             "[matmul] expected inputs of at least 2 dims, got ",
             shape_str(a.shape()), " and ", shape_str(b.shape()));
  KBIT_CHECK(a.shape(-1) == b.shape(-2),
             "[matmul] expected inner dimensions to match, got ",
             shape_str(a.shape()), " and ", shape_str(b.shape()));
  bool shared = b.dim() == 2;
  bool same_batch =
      b.dim() == a.dim() &&
      std::equal(a.shape().begin(), a.shape().end() - 2, b.shape().begin());
  KBIT_CHECK(shared || same_batch,
             "[matmul] expected b to be 2-D or to have a's batch dims, got ",
             shape_str(a.shape()), " and ", shape_str(b.shape()));
  int64_t batch = 1;
  for (int i = 0; i < a.dim() - 2; ++i) batch *= a.shape()[size_t(i)];
  return {batch, a.shape(-2), b.shape(-1), a.shape(-1), shared};
}

// out (B, M, N) = a (B, M, K) b (B or shared, K, N).
template <typename T>
void matmul_forward(const Operand& a, const Operand& b, T* out,
                    const MatmulDims& d) {
  if (d.shared_b && flattens(a, d.M)) {
    gemm<T>(a, b, out, 1, d.batch * d.M, d.N, d.K);
  } else {
    gemm<T>(a, b, out, d.batch, d.M, d.N, d.K);
  }
}

// da (B, M, K) = g (B, M, N) b^T.
template <typename T>
Tensor matmul_grad_a(const Tensor& g, const Operand& b, const Shape& shape,
                     const MatmulDims& d) {
  Tensor da = Tensor::empty(shape, g.dtype());
  if (d.shared_b) {  // g is (B * M, N) as one matrix
    gemm<T>(plain(g, d.batch * d.M, d.N), transposed(b), da.data<T>(), 1,
            d.batch * d.M, d.K, d.N);
  } else {
    gemm<T>(plain(g, d.M, d.N), transposed(b), da.data<T>(), d.batch, d.M, d.K,
            d.N);
  }
  return da;
}

// db = a^T g: (B, K, N), or (K, N) summed over the batch when shared.
template <typename T>
Tensor matmul_grad_b(const Operand& a, const Tensor& g, const Shape& shape,
                     const MatmulDims& d) {
  Tensor db = Tensor::zeros(shape, g.dtype());
  T* p = db.data<T>();
  if (!d.shared_b) {
    gemm<T>(transposed(a), plain(g, d.M, d.N), p, d.batch, d.K, d.N, d.M);
  } else if (flattens(a, d.M)) {  // one GEMM over the (B * M) rows
    gemm<T>(transposed(a), plain(g, d.batch * d.M, d.N), p, 1, d.K, d.N,
            d.batch * d.M);
  } else {
    Operand og = plain(g, d.M, d.N);
    for (int64_t i = 0; i < d.batch; ++i) {
      gemm<T>(transposed(batch_item(a, i)), batch_item(og, i), p, 1, d.K, d.N,
              d.M, 1.0);
    }
  }
  return db;
}

struct MatmulSaved {
  Operand a, b;  // a for db, b for da
  MatmulDims d;
  bool need_a, need_b;
  Shape a_shape, b_shape;
};

std::vector<Tensor> matmul_backward(const MatmulSaved& s, const Tensor& grad) {
  Tensor g = grad.contiguous();  // (B, M, N)
  std::vector<Tensor> grads(2);
  dispatch_float(g.dtype(), "matmul backward", [&](auto* tp) {
    using T = std::remove_pointer_t<decltype(tp)>;
    if (s.need_a) grads[0] = matmul_grad_a<T>(g, s.b, s.a_shape, s.d);
    if (s.need_b) grads[1] = matmul_grad_b<T>(s.a, g, s.b_shape, s.d);
  });
  return grads;
}

// ---- linear ----

void check_linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_float(x, "linear", "x");
  check_float(weight, "linear", "weight");
  check_same_dtype(x, weight, "linear");
  KBIT_CHECK(
      weight.dim() == 2 && x.dim() >= 1 && x.shape(-1) == weight.shape(1),
      "[linear] expected x (..., in) and weight (out, in), got ",
      shape_str(x.shape()), " and ", shape_str(weight.shape()));
  if (!bias.defined()) return;
  check_float(bias, "linear", "bias");
  check_same_dtype(x, bias, "linear");
  KBIT_CHECK(bias.dim() == 1 && bias.shape(0) == weight.shape(0),
             "[linear] expected bias of shape (", weight.shape(0), ",), got ",
             shape_str(bias.shape()));
}

struct LinearSaved {
  Operand x, w;  // x (R, in) for dW, weight (out, in) for dx
  int64_t R, in, out;
  bool need_x, need_w, need_b;
  Shape x_shape;
};

// dx = g W (one GEMM), dW = g^T x (one GEMM), db = column sums of g.
std::vector<Tensor> linear_backward(const LinearSaved& s, const Tensor& grad) {
  Tensor g = grad.contiguous();  // (R, out)
  Operand og = plain(g, s.R, s.out);
  std::vector<Tensor> grads(3);
  dispatch_float(g.dtype(), "linear backward", [&](auto* tp) {
    using T = std::remove_pointer_t<decltype(tp)>;
    if (s.need_x) {
      grads[0] = Tensor::empty(s.x_shape, g.dtype());
      gemm<T>(og, s.w, grads[0].data<T>(), 1, s.R, s.in, s.out);
    }
    if (s.need_w) {
      grads[1] = Tensor::empty({s.out, s.in}, g.dtype());
      gemm<T>(transposed(og), s.x, grads[1].data<T>(), 1, s.out, s.in, s.R);
    }
    if (s.need_b) {
      grads[2] = Tensor::empty({s.out}, g.dtype());
      cpu::column_sums(g.data<T>(), grads[2].data<T>(), s.R, s.out);
    }
  });
  return grads;
}

// ---- softmax ----

struct AxisSplit {
  int64_t outer = 1, n = 1, inner = 1;
};

AxisSplit split_at(const Shape& s, int axis) {
  AxisSplit a;
  for (int i = 0; i < int(s.size()); ++i) {
    if (i < axis) a.outer *= s[size_t(i)];
    if (i == axis) a.n = s[size_t(i)];
    if (i > axis) a.inner *= s[size_t(i)];
  }
  return a;
}

Tensor softmax_op(const Tensor& a, int axis, bool log, const char* name) {
  check_float(a, name, "input");
  AxisSplit s = split_at(a.shape(), normalize_axis(axis, a.dim(), name));
  Tensor x = a.contiguous();
  Tensor y = Tensor::empty(a.shape(), a.dtype());
  dispatch_float(a.dtype(), name, [&](auto* tp) {
    using T = std::remove_pointer_t<decltype(tp)>;
    cpu::softmax(x.data<T>(), y.data<T>(), s.outer, s.n, s.inner, log);
  });
  Tensor saved = y.detach();
  return record(y, name, {a}, [saved, s, log](const Tensor& grad) {
    Tensor g = grad.contiguous();
    Tensor dx = Tensor::empty(saved.shape(), saved.dtype());
    dispatch_float(saved.dtype(), "softmax backward", [&](auto* tp) {
      using T = std::remove_pointer_t<decltype(tp)>;
      cpu::softmax_backward(saved.data<T>(), g.data<T>(), dx.data<T>(), s.outer,
                            s.n, s.inner, log);
    });
    return std::vector<Tensor>{dx};
  });
}

// ---- layer_norm ----

void check_norm_param(const Tensor& p, const Tensor& x, const char* what) {
  if (!p.defined()) return;
  check_float(p, "layer_norm", what);
  check_same_dtype(x, p, "layer_norm");
  KBIT_CHECK(p.dim() == 1 && p.shape(0) == x.shape(-1),
             "[layer_norm] expected ", what, " of shape (", x.shape(-1),
             ",), got ", shape_str(p.shape()));
}

template <typename T>
const T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

struct NormSaved {
  Tensor x, weight, mean, rstd;  // x (R, C) contiguous; mean, rstd (R)
  int64_t R, C;
};

std::vector<Tensor> layer_norm_backward(const NormSaved& s, const Tensor& grad,
                                        bool has_bias) {
  Tensor g = grad.contiguous();
  DType dt = s.x.dtype();
  Tensor dx = Tensor::empty(grad.shape(), dt);
  Tensor dw = s.weight.defined() ? Tensor::empty({s.C}, dt) : Tensor();
  Tensor db = has_bias ? Tensor::empty({s.C}, dt) : Tensor();
  dispatch_float(dt, "layer_norm backward", [&](auto* tp) {
    using T = std::remove_pointer_t<decltype(tp)>;
    cpu::layer_norm_backward(s.x.data<T>(), data_or_null<T>(s.weight),
                             s.mean.data<T>(), s.rstd.data<T>(), g.data<T>(),
                             dx.data<T>(),
                             dw.defined() ? dw.data<T>() : nullptr,
                             db.defined() ? db.data<T>() : nullptr, s.R, s.C);
  });
  return {dx, dw, db};
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  MatmulDims d = matmul_dims(a, b);
  Shape out_shape = with_last(a.shape(), d.N);
  Tensor out = Tensor::empty(out_shape, a.dtype());
  Operand oa = operand(a), ob = operand(b);
  dispatch_float(a.dtype(), "matmul", [&](auto* tp) {
    using T = std::remove_pointer_t<decltype(tp)>;
    matmul_forward<T>(oa, ob, out.data<T>(), d);
  });
  MatmulSaved s{oa,        ob,       d, a.requires_grad(), b.requires_grad(),
                a.shape(), b.shape()};
  if (!s.need_a) s.b.t = Tensor();  // keep only what backward reads
  if (!s.need_b) s.a.t = Tensor();
  return record(out, "matmul", {a, b},
                [s](const Tensor& grad) { return matmul_backward(s, grad); });
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_linear(x, weight, bias);
  int64_t in = weight.shape(1), out_f = weight.shape(0);
  int64_t R = x.numel() / std::max<int64_t>(in, 1);

  // y (R, out) = x (R, in) W^T (+ b, written first and kept by beta = 1).
  Tensor xc = x.contiguous();
  LinearSaved s{plain(xc, R, in),
                operand(weight),
                R,
                in,
                out_f,
                x.requires_grad(),
                weight.requires_grad(),
                bias.defined() && bias.requires_grad(),
                x.shape()};
  Tensor y = Tensor::empty(with_last(x.shape(), out_f), x.dtype());
  Tensor bc = bias.defined() ? bias.contiguous() : Tensor();
  dispatch_float(x.dtype(), "linear", [&](auto* tp) {
    using T = std::remove_pointer_t<decltype(tp)>;
    if (bc.defined()) cpu::broadcast_rows(bc.data<T>(), y.data<T>(), R, out_f);
    gemm<T>(s.x, transposed(s.w), y.data<T>(), 1, R, out_f, in,
            bc.defined() ? 1.0 : 0.0);
  });

  if (!s.need_x) s.w.t = Tensor();  // keep only what backward reads
  if (!s.need_w) s.x.t = Tensor();
  return record(y, "linear", {x, weight, bias},
                [s](const Tensor& grad) { return linear_backward(s, grad); });
}

Tensor bias_gelu(const Tensor& x, const Tensor& bias) {
  check_float(x, "bias_gelu", "x");
  check_float(bias, "bias_gelu", "bias");
  check_same_dtype(x, bias, "bias_gelu");
  KBIT_CHECK(x.dim() >= 1 && bias.dim() == 1 && bias.shape(0) == x.shape(-1),
             "[bias_gelu] expected x (..., n) and bias (n), got ",
             shape_str(x.shape()), " and ", shape_str(bias.shape()));
  const int64_t n = x.shape(-1), R = n > 0 ? x.numel() / n : 0;
  Tensor xs = x.contiguous().detach(), bs = bias.contiguous().detach();
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), "bias_gelu", [&](auto* tp) {
    using T = std::remove_pointer_t<decltype(tp)>;
    cpu::bias_gelu(xs.data<T>(), bs.data<T>(), y.data<T>(), R, n);
  });
  return record(y, "bias_gelu", {x, bias}, [xs, bs, R, n](const Tensor& grad) {
    Tensor g = grad.contiguous();
    Tensor dx = Tensor::empty(xs.shape(), xs.dtype());
    Tensor db = Tensor::empty({n}, xs.dtype());
    dispatch_float(xs.dtype(), "bias_gelu backward", [&](auto* tp) {
      using T = std::remove_pointer_t<decltype(tp)>;
      cpu::bias_gelu_backward(xs.data<T>(), bs.data<T>(), g.data<T>(),
                              dx.data<T>(), db.data<T>(), R, n);
    });
    return std::vector<Tensor>{dx, db};
  });
}

Tensor softmax(const Tensor& a, int axis) {
  return softmax_op(a, axis, false, "softmax");
}

Tensor log_softmax(const Tensor& a, int axis) {
  return softmax_op(a, axis, true, "log_softmax");
}

Tensor cross_entropy(const Tensor& logits, const Tensor& targets) {
  check_float(logits, "cross_entropy", "logits");
  KBIT_CHECK(targets.defined(), "[cross_entropy] expected defined targets");
  check_index_dtype(targets, "cross_entropy", "targets");
  KBIT_CHECK(logits.dim() == 2 && targets.dim() == 1 &&
                 targets.shape(0) == logits.shape(0) && logits.shape(0) > 0,
             "[cross_entropy] expected logits (N, C) with N >= 1 and targets "
             "(N,), got ",
             shape_str(logits.shape()), " and ", shape_str(targets.shape()));
  int64_t N = logits.shape(0), C = logits.shape(1);
  Tensor x = logits.contiguous(), t = targets.contiguous();
  dispatch_index(t, [&](auto* ip) {
    using I = std::remove_pointer_t<decltype(ip)>;
    check_range(t.data<I>(), N, C, "cross_entropy", "targets", "row");
  });

  Tensor lse = Tensor::empty({N}, x.dtype());
  Tensor loss = Tensor::empty({}, x.dtype());
  dispatch_float(x.dtype(), "cross_entropy", [&](auto* tp) {
    using T = std::remove_pointer_t<decltype(tp)>;
    dispatch_index(t, [&](auto* ip) {
      using I = std::remove_pointer_t<decltype(ip)>;
      *loss.data<T>() =
          T(cpu::cross_entropy(x.data<T>(), t.data<I>(), lse.data<T>(), N, C));
    });
  });
  Tensor xs = x.detach();
  return record(
      loss, "cross_entropy", {logits}, [xs, t, lse, N, C](const Tensor& grad) {
        Tensor dx = Tensor::empty({N, C}, xs.dtype());
        double scale = grad.item() / double(N);
        dispatch_float(xs.dtype(), "cross_entropy backward", [&](auto* tp) {
          using T = std::remove_pointer_t<decltype(tp)>;
          dispatch_index(t, [&](auto* ip) {
            using I = std::remove_pointer_t<decltype(ip)>;
            cpu::cross_entropy_backward(xs.data<T>(), t.data<I>(),
                                        lse.data<T>(), scale, dx.data<T>(), N,
                                        C);
          });
        });
        return std::vector<Tensor>{dx};
      });
}

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias,
                  double eps) {
  check_float(x, "layer_norm", "x");
  KBIT_CHECK(x.dim() >= 1, "[layer_norm] expected x of at least 1 dim, got ",
             shape_str(x.shape()));
  check_norm_param(weight, x, "weight");
  check_norm_param(bias, x, "bias");
  KBIT_CHECK(eps >= 0 && std::isfinite(eps),
             "[layer_norm] expected a finite eps >= 0, got ", eps);
  int64_t C = x.shape(-1), R = C > 0 ? x.numel() / C : 0;

  NormSaved s{x.contiguous().detach(),
              weight.defined() ? weight.contiguous().detach() : Tensor(),
              Tensor::empty({R}, x.dtype()),
              Tensor::empty({R}, x.dtype()),
              R,
              C};
  Tensor bc = bias.defined() ? bias.contiguous() : Tensor();
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), "layer_norm", [&](auto* tp) {
    using T = std::remove_pointer_t<decltype(tp)>;
    cpu::layer_norm(s.x.data<T>(), data_or_null<T>(s.weight),
                    data_or_null<T>(bc), y.data<T>(), s.mean.data<T>(),
                    s.rstd.data<T>(), R, C, eps);
  });
  bool has_bias = bias.defined();
  return record(y, "layer_norm", {x, weight, bias},
                [s, has_bias](const Tensor& grad) {
                  return layer_norm_backward(s, grad, has_bias);
                });
}

Tensor embedding(const Tensor& weight, const Tensor& indices) {
  check_float(weight, "embedding", "weight");
  KBIT_CHECK(indices.defined(), "[embedding] expected defined indices");
  check_index_dtype(indices, "embedding", "indices");
  KBIT_CHECK(weight.dim() == 2, "[embedding] expected weight (V, C), got ",
             shape_str(weight.shape()));
  int64_t V = weight.shape(0), C = weight.shape(1), n = indices.numel();
  Tensor w = weight.contiguous(), idx = indices.contiguous();
  dispatch_index(idx, [&](auto* ip) {
    using I = std::remove_pointer_t<decltype(ip)>;
    check_range(idx.data<I>(), n, V, "embedding", "indices", "position");
  });

  Shape out_shape = indices.shape();
  out_shape.push_back(C);
  Tensor y = Tensor::empty(out_shape, weight.dtype());
  dispatch_float(w.dtype(), "embedding", [&](auto* tp) {
    using T = std::remove_pointer_t<decltype(tp)>;
    dispatch_index(idx, [&](auto* ip) {
      using I = std::remove_pointer_t<decltype(ip)>;
      cpu::embedding(w.data<T>(), idx.data<I>(), y.data<T>(), n, C);
    });
  });
  DType dt = weight.dtype();
  return record(y, "embedding", {weight},
                [idx, V, C, n, dt](const Tensor& grad) {
                  Tensor g = grad.contiguous();
                  Tensor dw = Tensor::zeros({V, C}, dt);
                  dispatch_float(dt, "embedding backward", [&](auto* tp) {
                    using T = std::remove_pointer_t<decltype(tp)>;
                    dispatch_index(idx, [&](auto* ip) {
                      using I = std::remove_pointer_t<decltype(ip)>;
                      cpu::embedding_backward(g.data<T>(), idx.data<I>(),
                                              dw.data<T>(), n, C);
                    });
                  });
                  return std::vector<Tensor>{dw};
                });
}

Tensor dropout(const Tensor& a, double p, bool training, Philox& rng) {
  check_float(a, "dropout", "input");
  KBIT_CHECK(p >= 0 && p < 1, "[dropout] expected p in [0, 1), got ", p);
  if (!training || p == 0) return a;

  int64_t n = a.numel();
  Tensor x = a.contiguous();
  Tensor y = Tensor::empty(a.shape(), a.dtype());
  Tensor keep = Tensor::empty(a.shape(), DType::u8);
  dispatch_float(a.dtype(), "dropout", [&](auto* tp) {
    using T = std::remove_pointer_t<decltype(tp)>;
    cpu::dropout(x.data<T>(), y.data<T>(), keep.data<uint8_t>(), n, p,
                 rng.seed(), rng.offset());
  });
  rng.set_offset(rng.offset() + uint64_t(n));
  return record(y, "dropout", {a}, [keep, p, n](const Tensor& grad) {
    Tensor g = grad.contiguous();
    Tensor dx = Tensor::empty(g.shape(), g.dtype());
    dispatch_float(g.dtype(), "dropout backward", [&](auto* tp) {
      using T = std::remove_pointer_t<decltype(tp)>;
      cpu::dropout_backward(g.data<T>(), keep.data<uint8_t>(), dx.data<T>(), n,
                            p);
    });
    return std::vector<Tensor>{dx};
  });
}

}  // namespace kbit
