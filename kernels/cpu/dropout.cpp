// Dropout kernels: masks from Philox4x32-10 evaluated 16 blocks at a time.
#include "kernels/cpu/dropout.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/nn_common.h"

namespace kbit::cpu {
namespace {

// Philox4x32-10 on kLanes consecutive blocks at once, lane-major, so the
// rounds vectorize (one block at a time through core/philox.h's
// philox4x32 was about 9x slower here). The constants and round are those of
// core/philox.cpp; kernels/ref/dropout.h draws through Philox::word_at and
// the kernel test compares the masks bit for bit.
constexpr int kLanes = 16;
constexpr int kGroupWords = 4 * kLanes;  // stream words per group

// words (64): stream words 4 b0 .. 4 b0 + 63 of the key's stream, in order.
// Lanes outside, rounds inside: the lane loop vectorizes (vpmuludq).
void philox_group(uint64_t b0, uint32_t key0, uint32_t key1, uint32_t* words) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  uint32_t c0[kLanes], c1[kLanes], c2[kLanes], c3[kLanes];
#pragma omp simd
  for (int l = 0; l < kLanes; ++l) {
    uint64_t b = b0 + uint64_t(l);
    uint32_t a = uint32_t(b), u = uint32_t(b >> 32), c = 0, d = 0;
    uint32_t k0 = key0, k1 = key1;
    for (int r = 0; r < 10; ++r) {
      uint64_t p0 = uint64_t(kMul0) * a;
      uint64_t p1 = uint64_t(kMul1) * c;
      uint32_t n0 = uint32_t(p1 >> 32) ^ u ^ k0;
      uint32_t n2 = uint32_t(p0 >> 32) ^ d ^ k1;
      u = uint32_t(p1);
      d = uint32_t(p0);
      a = n0;
      c = n2;
      k0 += kWeyl0;
      k1 += kWeyl1;
    }
    c0[l] = a;
    c1[l] = u;
    c2[l] = c;
    c3[l] = d;
  }
  for (int l = 0; l < kLanes; ++l) {
    words[4 * l] = c0[l];
    words[4 * l + 1] = c1[l];
    words[4 * l + 2] = c2[l];
    words[4 * l + 3] = c3[l];
  }
}

}  // namespace

template <typename T>
void dropout(const T* x, T* y, uint8_t* keep, int64_t n, double p,
             uint64_t seed, uint64_t offset) {
  if (n <= 0) return;
  // Kept iff (word >> 8) / 2^24 >= p, i.e. (word >> 8) >= ceil(p * 2^24):
  // the same test as the unit float, in exact integer arithmetic.
  uint32_t threshold = uint32_t(std::ceil(p * 16777216.0));
  T scale = T(1.0 / (1.0 - p));
  uint32_t key0 = uint32_t(seed), key1 = uint32_t(seed >> 32);
  // Group g holds stream words [64 (first + g), 64 (first + g + 1)).
  uint64_t first = offset / kGroupWords;
  uint64_t last = (offset + uint64_t(n) - 1) / kGroupWords;
  int64_t groups = int64_t(last - first + 1);
#pragma omp parallel for if (n >= kParallelMinElements) schedule(static)
  for (int64_t g = 0; g < groups; ++g) {
    uint32_t words[kGroupWords];
    uint64_t w0 = (first + uint64_t(g)) * kGroupWords;
    philox_group(w0 / 4, key0, key1, words);
    // Elements i in [i0, i1) take words[w0 - offset + i ...].
    int64_t i0 = std::max<int64_t>(0, int64_t(w0) - int64_t(offset));
    int64_t i1 = std::min<int64_t>(n, int64_t(w0 + kGroupWords - offset));
    const uint32_t* wd = words + (int64_t(offset) + i0 - int64_t(w0));
    for (int64_t i = i0; i < i1; ++i) {
      bool kept = (wd[i - i0] >> 8) >= threshold;
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
