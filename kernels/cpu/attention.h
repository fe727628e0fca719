// Causal multi-head self-attention on the CPU, forward and backward.
//
// Shapes: B batch, T time, H heads of D channels, C = H * D. qkv (B, T, 3C)
// holds q in columns [0, C), k in [C, 2C), v in [2C, 3C); head h uses
// columns [h D, (h+1) D) of each, read in place through row strides (no
// head split or merge copies). out and dout (B, T, C), heads side by side;
// dqkv (B, T, 3C). probs (B, H, T, Tp) with Tp = attention_row(T): the
// softmax weights of the forward pass, kept for the backward pass; entry
// (t, j) is meaningful for j <= t only.
// Position t attends to 0..t with scale 1 / sqrt(D). (b, h) pairs go to
// OpenMP threads; each pair runs small register-blocked loops over rows
// in groups, so the masked upper triangle is skipped (no T x T mask).
// The oracle is kernels/ref/attention.h.
#pragma once

#include <cstdint>

namespace kbit::cpu {

// The row length of probs: T rounded up to a whole SIMD vector of T's.
template <typename T>
int64_t attention_row(int64_t Tn) {
  constexpr int64_t lanes = 64 / int64_t(sizeof(T));
  return (Tn + lanes - 1) / lanes * lanes;
}

template <typename T>
void causal_attention(const T* qkv, T* out, T* probs, int64_t B, int64_t Tn,
                      int64_t H, int64_t D);

// dqkv is overwritten.
template <typename T>
void causal_attention_backward(const T* qkv, const T* probs, const T* dout,
                               T* dqkv, int64_t B, int64_t Tn, int64_t H,
                               int64_t D);

}  // namespace kbit::cpu
