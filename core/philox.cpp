#include "core/philox.h"

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
  float u1 = next_uniform();
  float u2 = next_uniform();
  float r = std::sqrt(-2.0f * std::log(1.0f - u1));  // 1-u1 in (0, 1]
  return r * std::cos(6.2831853071795864f * u2);
}

void Philox::fill_uniform(float* out, int64_t n, float lo, float hi) {
  for (int64_t i = 0; i < n; ++i) out[i] = lo + (hi - lo) * next_uniform();
}

void Philox::fill_normal(float* out, int64_t n, float mean, float std) {
  for (int64_t i = 0; i < n; ++i) out[i] = mean + std * next_normal();
}

void Philox::fill_uniform(double* out, int64_t n, double lo, double hi) {
  for (int64_t i = 0; i < n; ++i) out[i] = lo + (hi - lo) * next_uniform();
}

void Philox::fill_normal(double* out, int64_t n, double mean, double std) {
  for (int64_t i = 0; i < n; ++i) out[i] = mean + std * next_normal();
}

}  // namespace kbit
