// Reference blockwise quantization: per-value argmin over the whole
// codebook with exact distances, one block after another, no tables and no
// SIMD. The oracle of kernels/cpu/quantize.h (same layout and rules: ties
// go to the upper code, NaN to code 0, +inf / -inf to the last / first
// code, v = x * (1 / absmax) with the inverse 0 below FLT_MIN).
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "core/dtype.h"
#include "core/error.h"
#include "core/philox.h"
#include "kernels/cpu/quantize.h"

namespace kbit::ref {

// |x - c| exactly, as hi + lo (Knuth's two-sum in double); hi is the
// rounded distance, so comparing (hi, lo) lexicographically is exact.
struct ExactDistance {
  double hi;
  double lo;
};

inline ExactDistance exact_distance(float x, float c) {
  double a = x, b = -double(c);
  double s = a + b;
  double bb = s - a;
  double err = (a - (s - bb)) + (b - bb);
  if (s < 0 || (s == 0 && err < 0)) return {-s, -err};
  return {s, err};
}

inline bool at_most(ExactDistance a, ExactDistance b) {
  return a.hi < b.hi || (a.hi == b.hi && a.lo <= b.lo);
}

// Index of the nearest of n sorted codes; a tie takes the later code.
inline int nearest_code(const float* codes, int n, float v) {
  if (std::isinf(v)) return v > 0 ? n - 1 : 0;
  int best = 0;
  for (int j = 1; j < n; ++j) {
    if (at_most(exact_distance(v, codes[j]), exact_distance(v, codes[best])))
      best = j;
  }
  return best;
}

// Stochastic code for uniform u: rounds up from the code below with
// probability (v - c[lo]) / (c[lo + 1] - c[lo]).
inline int stochastic_code(const float* codes, int n, float v, float u) {
  int lo = 0;
  for (int j = 1; j < n; ++j) {
    if (v >= codes[j]) lo = j;
  }
  int hi = lo + 1 < n ? lo + 1 : lo;
  float p = (v - codes[lo]) / (codes[hi] - codes[lo]);
  int c = lo + (u < p);
  return c < n ? c : n - 1;
}

inline float inverse_absmax(float absmax) {
  return absmax >= FLT_MIN ? 1.f / absmax : 0.f;
}

inline void set_code(uint8_t* codes, int64_t i, int c, bool packed) {
  if (!packed) {
    codes[i] = uint8_t(c);
  } else if (i % 2 == 0) {
    codes[i / 2] = uint8_t((codes[i / 2] & 0x0f) | (c << 4));
  } else {
    codes[i / 2] = uint8_t((codes[i / 2] & 0xf0) | c);
  }
}

inline int get_code(const uint8_t* codes, int64_t i, bool packed) {
  if (!packed) return codes[i];
  return i % 2 == 0 ? codes[i / 2] >> 4 : codes[i / 2] & 0x0f;
}

// x (n) -> absmax (ceil(n / block_size)), codes (n or ceil(n / 2) bytes,
// packed when ncodes <= 16). block_size >= n: one block.
template <typename T>
void quantize_blockwise(const float* code_values, int ncodes, const T* x,
                        int64_t n, int64_t block_size, float* absmax,
                        uint8_t* codes,
                        const cpu::Stochastic* stochastic = nullptr) {
  KBIT_CHECK(block_size >= 1, "[ref::quantize] expected block_size >= 1, got ",
             block_size);
  bool packed = ncodes <= 16;
  if (packed) {
    for (int64_t i = 0; i < (n + 1) / 2; ++i) codes[i] = 0;
  }
  Philox rng(stochastic ? stochastic->seed : 0);
  for (int64_t begin = 0, j = 0; begin < n; begin += block_size, ++j) {
    int64_t end = begin + block_size < n ? begin + block_size : n;
    float m = 0.f;
    for (int64_t i = begin; i < end; ++i) {
      float a = std::fabs(cpu::to_f32(x[i]));
      if (a > m) m = a;
    }
    absmax[j] = m;
    float inv = inverse_absmax(m);
    for (int64_t i = begin; i < end; ++i) {
      float v = cpu::to_f32(x[i]) * inv;
      int c;
      if (stochastic) {
        float u = uint_to_unit_float(rng.word_at(stochastic->offset + i));
        c = stochastic_code(code_values, ncodes, v, u);
      } else {
        c = nearest_code(code_values, ncodes, v);
      }
      set_code(codes, i, c, packed);
    }
  }
}

// codes, absmax -> out (n): out[i] = code_values[code i] * absmax[block].
inline void dequantize_blockwise(const float* code_values, int ncodes,
                                 const uint8_t* codes, const float* absmax,
                                 int64_t n, int64_t block_size, float* out) {
  bool packed = ncodes <= 16;
  for (int64_t i = 0; i < n; ++i) {
    int c = get_code(codes, i, packed);
    KBIT_CHECK(c < ncodes, "[ref::dequantize] expected codes < ", ncodes,
               ", got ", c, " at ", i);
    out[i] = code_values[c] * absmax[i / block_size];
  }
}

}  // namespace kbit::ref
