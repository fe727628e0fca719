// Embedding kernels: row copies forward, column-blocked scatter-add
// backward (threads own columns, so repeated indices never race).
#include "kernels/cpu/embedding.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/nn_common.h"

namespace kbit::cpu {

template <typename T, typename I>
void embedding(const T* weight, const I* indices, T* out, int64_t n,
               int64_t C) {
#pragma omp parallel for if (n * C >= kParallelMinElements) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(out + i * C, weight + int64_t(indices[i]) * C,
                size_t(C) * sizeof(T));
  }
}

template <typename T, typename I>
void embedding_backward(const T* g, const I* indices, T* dweight, int64_t n,
                        int64_t C) {
  constexpr int64_t kColumnBlock = 64;  // a cache line or more of columns
  int64_t blocks = (C + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for if (n * C >= kParallelMinElements) schedule(static)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    int64_t c0 = blk * kColumnBlock;
    int64_t c1 = std::min(C, c0 + kColumnBlock);
    for (int64_t i = 0; i < n; ++i) {
      T* d = dweight + int64_t(indices[i]) * C;
      const T* gi = g + i * C;
#pragma omp simd
      for (int64_t j = c0; j < c1; ++j) d[j] += gi[j];
    }
  }
}

#define KBIT_EMB_INSTANTIATE(T, I)                                   \
  template void embedding(const T*, const I*, T*, int64_t, int64_t); \
  template void embedding_backward(const T*, const I*, T*, int64_t, int64_t);
KBIT_EMB_INSTANTIATE(float, int32_t)
KBIT_EMB_INSTANTIATE(float, int64_t)
KBIT_EMB_INSTANTIATE(double, int32_t)
KBIT_EMB_INSTANTIATE(double, int64_t)
#undef KBIT_EMB_INSTANTIATE

}  // namespace kbit::cpu
