// Reference dropout: one Philox word per element through Philox::word_at.
// The oracle of kernels/cpu/dropout.h (same arguments).
#pragma once

#include <cstdint>

#include "core/philox.h"

namespace kbit::ref {

template <typename T>
void dropout(const T* x, T* y, uint8_t* keep, int64_t n, double p,
             uint64_t seed, uint64_t offset) {
  Philox rng(seed);
  for (int64_t i = 0; i < n; ++i) {
    double u = uint_to_unit_float(rng.word_at(offset + uint64_t(i)));
    keep[i] = u >= p;
    y[i] = keep[i] ? T(x[i] / (1.0 - p)) : T(0);
  }
}

template <typename T>
void dropout_backward(const T* g, const uint8_t* keep, T* dx, int64_t n,
                      double p) {
  for (int64_t i = 0; i < n; ++i) dx[i] = keep[i] ? T(g[i] / (1.0 - p)) : T(0);
}

}  // namespace kbit::ref
