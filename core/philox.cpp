#include "core/philox.h"

#include <algorithm>
#include <cmath>

namespace kbit {
namespace {

constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;
constexpr uint32_t kWeyl1 = 0xBB67AE85u;
constexpr int kRounds = 10;

inline void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t p = uint64_t(a) * b;
  hi = uint32_t(p >> 32);
  lo = uint32_t(p);
}

// Box-Muller from two words: one N(0, 1) value.
inline float normal_from(uint32_t a, uint32_t b) {
  float u1 = uint_to_unit_float(a);
  float u2 = uint_to_unit_float(b);
  float r = std::sqrt(-2.0f * std::log(1.0f - u1));  // 1-u1 in (0, 1]
  return r * std::cos(6.2831853071795864f * u2);
}

}  // namespace

PhiloxBlock philox4x32(PhiloxBlock c, std::array<uint32_t, 2> k) {
  for (int r = 0; r < kRounds; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kMul0, c[0], hi0, lo0);
    mulhilo(kMul1, c[2], hi1, lo1);
    c = {hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0};
    k[0] += kWeyl0;
    k[1] += kWeyl1;
  }
  return c;
}

uint32_t Philox::word_at(uint64_t i) const {
  uint64_t block = i / 4;
  PhiloxBlock ctr = {uint32_t(block), uint32_t(block >> 32), 0, 0};
  PhiloxBlock out = philox4x32(ctr, {uint32_t(seed_), uint32_t(seed_ >> 32)});
  return out[i % 4];
}

uint32_t Philox::next_u32() {
  return word_at(offset_++);
}

float Philox::next_uniform() {
  return uint_to_unit_float(next_u32());
}

float Philox::next_normal() {
  uint32_t a = next_u32();
  return normal_from(a, next_u32());
}

void Philox::fill_words(uint32_t* out, int64_t n) {
  // One Philox evaluation serves four consecutive words.
  std::array<uint32_t, 2> key = {uint32_t(seed_), uint32_t(seed_ >> 32)};
  int64_t i = 0;
  while (i < n) {
    uint64_t pos = offset_ + uint64_t(i);
    uint64_t block = pos / 4;
    PhiloxBlock w =
        philox4x32({uint32_t(block), uint32_t(block >> 32), 0, 0}, key);
    for (uint64_t j = pos % 4; j < 4 && i < n; ++j) out[i++] = w[j];
  }
  offset_ += uint64_t(n);
}

namespace {

// Calls f(words, first, count) over the next n words of rng, in chunks.
template <typename F>
void for_word_chunks(Philox& rng, int64_t n, F&& f) {
  constexpr int64_t kChunk = 1024;
  uint32_t words[kChunk];
  for (int64_t done = 0; done < n; done += kChunk) {
    int64_t m = std::min(kChunk, n - done);
    rng.fill_words(words, m);
    f(words, done, m);
  }
}

template <typename T>
void fill_uniform_impl(Philox& rng, T* out, int64_t n, T lo, T hi) {
  for_word_chunks(rng, n, [&](const uint32_t* w, int64_t at, int64_t m) {
    for (int64_t i = 0; i < m; ++i) {
      out[at + i] = lo + (hi - lo) * T(uint_to_unit_float(w[i]));
    }
  });
}

// Each normal value takes two consecutive words, as next_normal() does.
template <typename T>
void fill_normal_impl(Philox& rng, T* out, int64_t n, T mean, T std) {
  for_word_chunks(rng, 2 * n, [&](const uint32_t* w, int64_t at, int64_t m) {
    for (int64_t i = 0; i < m; i += 2) {
      out[(at + i) / 2] = mean + std * T(normal_from(w[i], w[i + 1]));
    }
  });
}

}  // namespace

void Philox::fill_uniform(float* out, int64_t n, float lo, float hi) {
  fill_uniform_impl(*this, out, n, lo, hi);
}

void Philox::fill_normal(float* out, int64_t n, float mean, float std) {
  fill_normal_impl(*this, out, n, mean, std);
}

void Philox::fill_uniform(double* out, int64_t n, double lo, double hi) {
  fill_uniform_impl(*this, out, n, lo, hi);
}

void Philox::fill_normal(double* out, int64_t n, double mean, double std) {
  fill_normal_impl(*this, out, n, mean, std);
}

}  // namespace kbit
