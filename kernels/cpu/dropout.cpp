#include "kernels/cpu/dropout.h"

#include <algorithm>
#include <cmath>

#include "core/philox.h"
#include "kernels/cpu/nn_common.h"

namespace kbit::cpu {

template <typename T>
void dropout(const T* x, T* y, uint8_t* keep, int64_t n, double p,
             uint64_t seed, uint64_t offset) {
  if (n <= 0) return;
  // Kept iff (word >> 8) / 2^24 >= p, i.e. (word >> 8) >= ceil(p * 2^24):
  // the same test as the unit float, in exact integer arithmetic.
  uint32_t threshold = uint32_t(std::ceil(p * 16777216.0));
  T scale = T(1.0 / (1.0 - p));
  std::array<uint32_t, 2> key = {uint32_t(seed), uint32_t(seed >> 32)};
  // Philox block b holds stream words 4b .. 4b + 3.
  uint64_t first = offset / 4, last = (offset + uint64_t(n) - 1) / 4;
  int64_t blocks = int64_t(last - first + 1);
#pragma omp parallel for if (n >= kParallelMinElements) schedule(static)
  for (int64_t k = 0; k < blocks; ++k) {
    uint64_t b = first + uint64_t(k);
    PhiloxBlock words = philox4x32({uint32_t(b), uint32_t(b >> 32), 0, 0}, key);
    for (int w = 0; w < 4; ++w) {
      uint64_t pos = 4 * b + uint64_t(w);
      if (pos < offset || pos >= offset + uint64_t(n)) continue;
      int64_t i = int64_t(pos - offset);
      bool kept = (words[size_t(w)] >> 8) >= threshold;
      keep[i] = uint8_t(kept);
      y[i] = kept ? x[i] * scale : T(0);
    }
  }
}

template <typename T>
void dropout_backward(const T* g, const uint8_t* keep, T* dx, int64_t n,
                      double p) {
  T scale = T(1.0 / (1.0 - p));
#pragma omp parallel for simd if (n >= kParallelMinElements) schedule(static)
  for (int64_t i = 0; i < n; ++i) dx[i] = keep[i] ? g[i] * scale : T(0);
}

template void dropout(const float*, float*, uint8_t*, int64_t, double, uint64_t,
                      uint64_t);
template void dropout(const double*, double*, uint8_t*, int64_t, double,
                      uint64_t, uint64_t);
template void dropout_backward(const float*, const uint8_t*, float*, int64_t,
                               double);
template void dropout_backward(const double*, const uint8_t*, double*, int64_t,
                               double);

}  // namespace kbit::cpu
