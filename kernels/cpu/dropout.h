// Dropout with a mask drawn from a Philox stream, on the CPU.
//
// Shapes: x, y, g, dx (n) contiguous; keep (n) bytes, 1 = kept. Element i
// is kept when word (offset + i) of the Philox stream of `seed`, as a unit
// float in [0, 1) (core/philox.h: uint_to_unit_float), is >= p; kept
// elements are scaled by 1 / (1 - p). The words are those of
// Philox(seed).word_at, so any split of the work draws the same mask. The
// oracle is kernels/ref/dropout.h.
#pragma once

#include <cstdint>

namespace kbit::cpu {

// Requires 0 <= p < 1 (the caller checks).
template <typename T>
void dropout(const T* x, T* y, uint8_t* keep, int64_t n, double p,
             uint64_t seed, uint64_t offset);

// dx = g * keep / (1 - p).
template <typename T>
void dropout_backward(const T* g, const uint8_t* keep, T* dx, int64_t n,
                      double p);

}  // namespace kbit::cpu
