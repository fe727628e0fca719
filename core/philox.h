// Philox4x32-10: a counter-based random generator (Salmon et al., SC'11).
//
// The value at position i of a stream depends only on (seed, i), so CPU and
// CUDA kernels can draw the same numbers in any order and any split, and a
// run is reproducible bit for bit. `Philox` keeps a running offset so that
// successive draws continue the stream.
#pragma once

#include <array>
#include <cstdint>

namespace kbit {

using PhiloxBlock = std::array<uint32_t, 4>;

// One Philox4x32-10 evaluation: 4 random words for counter `ctr`, key `key`.
PhiloxBlock philox4x32(PhiloxBlock ctr, std::array<uint32_t, 2> key);

// Uniform in [0, 1) from the top 24 bits of a word.
inline float uint_to_unit_float(uint32_t x) {
  return float(x >> 8) * (1.0f / 16777216.0f);
}

class Philox {
 public:
  explicit Philox(uint64_t seed = 0, uint64_t offset = 0)
      : seed_(seed), offset_(offset) {}

  uint64_t seed() const { return seed_; }
  // Number of 32-bit words drawn so far (the stream position).
  uint64_t offset() const { return offset_; }
  void set_offset(uint64_t offset) { offset_ = offset; }

  // Word i of this seed's stream, independent of the running offset.
  uint32_t word_at(uint64_t i) const;
  uint32_t next_u32();
  float next_uniform();  // [0, 1)
  float next_normal();   // N(0, 1), Box-Muller
  // The next n words of the stream (advances the offset by n).
  void fill_words(uint32_t* out, int64_t n);
  // Fills n values and advances the offset by n (uniform) or 2n (normal).
  void fill_uniform(float* out, int64_t n, float lo = 0.f, float hi = 1.f);
  void fill_normal(float* out, int64_t n, float mean = 0.f, float std = 1.f);
  void fill_uniform(double* out, int64_t n, double lo = 0., double hi = 1.);
  void fill_normal(double* out, int64_t n, double mean = 0., double std = 1.);

 private:
  uint64_t seed_;
  uint64_t offset_;
};

}  // namespace kbit
