// Causal multi-head self-attention as one differentiable op (autograd/ops.h).
// The forward pass keeps the softmax weights P (B, H, T, ~T) for the
// backward pass, which gives the gradient of the packed qkv input in one
// (B, T, 3C) tensor. Kernels: kernels/cpu/attention.h.
//
// Shapes: B batch, T time, H heads of D channels, C = H * D.
#include "autograd/ops.h"
#include "autograd/ops_util.h"
#include "core/error.h"
#include "kernels/cpu/attention.h"

namespace kbit {
namespace {

struct AttentionDims {
  int64_t B, T, H, D;
};

AttentionDims attention_dims(const Tensor& qkv, int64_t n_head) {
  ops::check_float(qkv, "causal_attention");
  KBIT_CHECK(qkv.dim() == 3 && qkv.shape(2) % 3 == 0 && qkv.shape(2) > 0,
             "[causal_attention] expected qkv (B, T, 3C) with C >= 1, got ",
             shape_str(qkv.shape()));
  const int64_t C = qkv.shape(2) / 3;
  KBIT_CHECK(n_head >= 1 && C % n_head == 0,
             "[causal_attention] expected n_head >= 1 dividing C = ", C,
             ", got n_head ", n_head);
  return {qkv.shape(0), qkv.shape(1), n_head, C / n_head};
}

}  // namespace

Tensor causal_attention(const Tensor& qkv, int64_t n_head) {
  const AttentionDims d = attention_dims(qkv, n_head);
  const DType dt = qkv.dtype();
  Tensor x = ops::contiguous(qkv).detach();
  Tensor out = Tensor::empty({d.B, d.T, d.H * d.D}, dt);  // (B, T, C)
  Tensor probs;  // (B, H, T, Tp), Tp = T rounded up to whole vectors
  dispatch_float(dt, "causal_attention", [&](auto* tp) {
    using T = std::remove_pointer_t<decltype(tp)>;
    probs = Tensor::empty({d.B, d.H, d.T, cpu::attention_row<T>(d.T)}, dt);
    cpu::causal_attention(x.data<T>(), out.data<T>(), probs.data<T>(), d.B, d.T,
                          d.H, d.D);
  });
  return record(
      out, "causal_attention", {qkv}, [x, probs, d](const Tensor& grad) {
        Tensor g = ops::contiguous(grad);
        Tensor dqkv = Tensor::empty(x.shape(), x.dtype());
        dispatch_float(x.dtype(), "causal_attention backward", [&](auto* tp) {
          using T = std::remove_pointer_t<decltype(tp)>;
          cpu::causal_attention_backward(x.data<T>(), probs.data<T>(),
                                         g.data<T>(), dqkv.data<T>(), d.B, d.T,
                                         d.H, d.D);
        });
        return std::vector<Tensor>{dqkv};
      });
}

}  // namespace kbit
