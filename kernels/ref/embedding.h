// Reference embedding lookup and scatter-add. The oracle of
// kernels/cpu/embedding.h (same arguments).
#pragma once

#include <cstdint>

namespace kbit::ref {

template <typename T, typename I>
void embedding(const T* weight, const I* indices, T* out, int64_t n,
               int64_t C) {
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < C; ++j) out[i * C + j] = weight[indices[i] * C + j];
  }
}

template <typename T, typename I>
void embedding_backward(const T* g, const I* indices, T* dweight, int64_t n,
                        int64_t C) {
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < C; ++j) dweight[indices[i] * C + j] += g[i * C + j];
  }
}

}  // namespace kbit::ref
