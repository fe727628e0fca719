// Causal multi-head self-attention on the CPU, forward and backward.
//
// Shapes: B batch, T time, H heads of D channels, C = H * D. qkv (B, T, 3C)
// holds q in columns [0, C), k in [C, 2C), v in [2C, 3C); head h uses
// columns [h D, (h+1) D) of each, read in place through row strides (no
// head split or merge copies). out and dout (B, T, C), heads side by side;
// dqkv (B, T, 3C). probs (B, H, T, T): the softmax weights of the forward
// pass, kept for the backward pass; only the causal lower triangle of each
// row block is meaningful (entries above it are unspecified).
// Position t attends to 0..t with scale 1 / sqrt(D). (b, h) pairs go to
// OpenMP threads, each running single-threaded GEMMs on row blocks of
// kAttentionTile rows, so the masked upper triangle is skipped block-wise.
// The oracle is kernels/ref/attention.h.
#pragma once

#include <cstdint>

namespace kbit::cpu {

// Rows of one causal block: block i multiplies against keys [0, (i+1) tile).
inline constexpr int64_t kAttentionTile = 32;

template <typename T>
void causal_attention(const T* qkv, T* out, T* probs, int64_t B, int64_t Tn,
                      int64_t H, int64_t D);

// dqkv is overwritten.
template <typename T>
void causal_attention_backward(const T* qkv, const T* probs, const T* dout,
                               T* dqkv, int64_t B, int64_t Tn, int64_t H,
                               int64_t D);

}  // namespace kbit::cpu
