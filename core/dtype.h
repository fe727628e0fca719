// Element types and their sizes, plus f16/bf16 conversions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace kbit {

enum class DType : uint8_t { f32, f64, f16, bf16, i8, u8, i32, i64 };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);
bool is_floating(DType dtype);
// Parses "f32", "float32", ... ; throws UserError listing the valid names.
DType parse_dtype(const std::string& name);

template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::f32;
};
template <>
struct DTypeOf<double> {
  static constexpr DType value = DType::f64;
};
template <>
struct DTypeOf<int8_t> {
  static constexpr DType value = DType::i8;
};
template <>
struct DTypeOf<uint8_t> {
  static constexpr DType value = DType::u8;
};
template <>
struct DTypeOf<int32_t> {
  static constexpr DType value = DType::i32;
};
template <>
struct DTypeOf<int64_t> {
  static constexpr DType value = DType::i64;
};

// f16 and bf16 are stored as raw 16-bit patterns.
struct f16_t {
  uint16_t bits;
};
struct bf16_t {
  uint16_t bits;
};
template <>
struct DTypeOf<f16_t> {
  static constexpr DType value = DType::f16;
};
template <>
struct DTypeOf<bf16_t> {
  static constexpr DType value = DType::bf16;
};

// bf16 is the top half of an f32; rounding is to nearest, ties to even.
inline bf16_t f32_to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {uint16_t((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return {uint16_t(u >> 16)};
}
inline float bf16_to_f32(bf16_t x) {
  uint32_t u = uint32_t(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// IEEE half precision, round to nearest even, with subnormals and inf/nan.
f16_t f32_to_f16(float x);
float f16_to_f32(f16_t x);

}  // namespace kbit
