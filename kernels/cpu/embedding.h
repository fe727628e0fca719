// Embedding lookup and its scatter-add backward, on the CPU.
//
// Shapes: weight, dweight (V, C) contiguous; n indices (int32_t or int64_t,
// values in [0, V), checked by the caller); out, g (n, C). The oracle is
// kernels/ref/embedding.h.
#pragma once

#include <cstdint>

namespace kbit::cpu {

// out[i] = weight[indices[i]] for i < n.
template <typename T, typename I>
void embedding(const T* weight, const I* indices, T* out, int64_t n, int64_t C);

// dweight[indices[i]] += g[i] for i < n (repeated indices add up). Columns
// are split between threads, so the sums are in index order on any thread
// count.
template <typename T, typename I>
void embedding_backward(const T* g, const I* indices, T* dweight, int64_t n,
                        int64_t C);

}  // namespace kbit::cpu
