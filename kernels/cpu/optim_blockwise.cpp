// Fused blockwise-quantized optimizer steps: one driver templated on the
// update rule (a small policy with 1 or 2 states) and on the code width (8
// or 4 bits). The policies are written once against a tiny value type V,
// which is float for tails and a vector for the body; every multiply-add is
// an explicit fma, so both give bit-identical results and the compiler has
// no mul+add left to contract differently.
//
// SIMD layers: AVX-512 (16 lanes; built with -march=native on this
// machine), AVX2 + FMA (8 lanes), or scalar only. With AVX512-VBMI the
// 8-bit dequantization looks the codes up in registers (byte permutes over
// the codebook's byte planes) instead of gathering. Requantization is one
// gather from a 65536-entry table indexed by the top 16 bits of the float,
// an xor and an add (BlockCodebook::Table). Measured here (Xeon with
// AVX512-VBMI, 1 thread, 65536 parameters repeated, min of 300 steps, TSC
// cycles): AdamW 8-bit 2.51 cycles per parameter (2.56 with the earlier
// compare-based table, 2.80 with dequantize gathers); of that,
// requantization ~1.2 (its gathers ~0.45), sqrt + division ~0.3. The AVX2
// layer runs at ~5.0 (measured with the earlier table).
#include "kernels/cpu/optim_blockwise.h"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <utility>

#include "core/error.h"

#if defined(__AVX2__) && defined(__FMA__)
// GCC 12's AVX-512 headers start from _mm512_undefined_*() values, which
// -Wall reports as uninitialized at every inlined use.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define KBIT_BLOCKWISE_AVX2 1
#endif

namespace kbit::cpu {

// ---- rules ----

int blockwise_num_states(BlockwiseRule rule) {
  return rule == BlockwiseRule::adam || rule == BlockwiseRule::lamb ? 2 : 1;
}

const char* blockwise_rule_name(BlockwiseRule rule) {
  switch (rule) {
    case BlockwiseRule::momentum:
      return "momentum";
    case BlockwiseRule::nesterov:
      return "nesterov";
    case BlockwiseRule::lars:
      return "lars";
    case BlockwiseRule::rmsprop:
      return "rmsprop";
    case BlockwiseRule::adagrad:
      return "adagrad";
    case BlockwiseRule::lion:
      return "lion";
    case BlockwiseRule::adam:
      return "adam";
    case BlockwiseRule::lamb:
      return "lamb";
  }
  return "?";
}

BlockwiseScalars blockwise_scalars(BlockwiseRule rule,
                                   const BlockwiseHyper& h) {
  KBIT_CHECK(h.step >= 1, "[blockwise_step] expected step >= 1, got ", h.step);
  const double lr = h.lr, b1 = h.beta1, b2 = h.beta2, wd = h.weight_decay;
  const double t = double(h.step);
  const double c1 = 1.0 - std::pow(b1, t), c2 = 1.0 - std::pow(b2, t);
  BlockwiseScalars s;
  s.b1 = h.beta1;
  s.omb1 = float(1.0 - b1);
  s.b2 = h.beta2;
  s.omb2 = float(1.0 - b2);
  s.mu = h.step == 1 ? 0.0f : h.beta1;
  s.neg_lr = float(-lr);
  s.neg_lr_scale = float(-lr * double(h.update_scale));
  s.eps = h.eps;
  s.inv_c1 = float(1.0 / c1);
  s.inv_sqrt_c2 = float(1.0 / std::sqrt(c2));
  s.neg_step = float(-lr / c1);
  // Decoupled decay: AdamW (decoupled) and Lion; LAMB adds wd * p to u;
  // the rest (and Adam with decoupled = false) add wd * p to g.
  const bool decoupled = rule == BlockwiseRule::lion ||
                         (rule == BlockwiseRule::adam && h.decoupled);
  s.neg_decay = decoupled ? float(-lr * wd) : 0.0f;
  s.lamb_wd = rule == BlockwiseRule::lamb ? h.weight_decay : 0.0f;
  s.wd = decoupled || rule == BlockwiseRule::lamb ? 0.0f : h.weight_decay;
  return s;
}

namespace {

// ---- the value type: float, or 8 / 16 f32 lanes ----

inline float vfma(float a, float b, float c) {
  return std::fma(a, b, c);
}
inline float vsqrt(float a) {
  return std::sqrt(a);
}
inline float vsign(float a) {
  return float(a > 0.0f) - float(a < 0.0f);
}

#if defined(__AVX512F__) && defined(__AVX512BW__)
#define KBIT_BLOCKWISE_AVX512 1
struct V16 {
  __m512 v;
  V16() = default;
  explicit V16(float x) : v(_mm512_set1_ps(x)) {}
  V16(__m512 x) : v(x) {}
};
inline V16 operator+(V16 a, V16 b) {
  return _mm512_add_ps(a.v, b.v);
}
inline V16 operator*(V16 a, V16 b) {
  return _mm512_mul_ps(a.v, b.v);
}
inline V16 operator/(V16 a, V16 b) {
  return _mm512_div_ps(a.v, b.v);
}
inline V16 vfma(V16 a, V16 b, V16 c) {
  return _mm512_fmadd_ps(a.v, b.v, c.v);
}
inline V16 vsqrt(V16 a) {
  return _mm512_sqrt_ps(a.v);
}
inline V16 vsign(V16 a) {
  const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
  __m512 pos =
      _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a.v, zero, _CMP_GT_OQ), one);
  __m512 neg =
      _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a.v, zero, _CMP_LT_OQ), one);
  return _mm512_sub_ps(pos, neg);
}
#elif defined(KBIT_BLOCKWISE_AVX2)
struct V8 {
  __m256 v;
  V8() = default;
  explicit V8(float x) : v(_mm256_set1_ps(x)) {}
  V8(__m256 x) : v(x) {}
};
inline V8 operator+(V8 a, V8 b) {
  return _mm256_add_ps(a.v, b.v);
}
inline V8 operator*(V8 a, V8 b) {
  return _mm256_mul_ps(a.v, b.v);
}
inline V8 operator/(V8 a, V8 b) {
  return _mm256_div_ps(a.v, b.v);
}
inline V8 vfma(V8 a, V8 b, V8 c) {
  return _mm256_fmadd_ps(a.v, b.v, c.v);
}
inline V8 vsqrt(V8 a) {
  return _mm256_sqrt_ps(a.v);
}
inline V8 vsign(V8 a) {
  const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
  __m256 pos = _mm256_and_ps(_mm256_cmp_ps(a.v, zero, _CMP_GT_OQ), one);
  __m256 neg = _mm256_and_ps(_mm256_cmp_ps(a.v, zero, _CMP_LT_OQ), one);
  return _mm256_sub_ps(pos, neg);
}
#endif

// ---- policies: step(p, g, s1, s2) updates p and the states in place ----

struct Momentum {
  static constexpr int kStates = 1;
  BlockwiseScalars k;
  template <class V>
  void step(V& p, V g, V& s, V&) const {
    s = vfma(V(k.mu), s, vfma(V(k.wd), p, g));
    p = vfma(V(k.neg_lr), s, p);
  }
};

struct Nesterov {
  static constexpr int kStates = 1;
  BlockwiseScalars k;
  template <class V>
  void step(V& p, V g, V& s, V&) const {
    V gd = vfma(V(k.wd), p, g);
    s = vfma(V(k.mu), s, gd);
    p = vfma(V(k.neg_lr), vfma(V(k.mu), s, gd), p);
  }
};

struct Lars {
  static constexpr int kStates = 1;
  BlockwiseScalars k;
  template <class V>
  V update(V p, V g, V& s, V&) const {
    s = vfma(V(k.mu), s, vfma(V(k.wd), p, g));
    return s;
  }
  template <class V>
  void step(V& p, V g, V& s, V& s2) const {
    p = vfma(V(k.neg_lr_scale), update(p, g, s, s2), p);
  }
};

struct Rmsprop {
  static constexpr int kStates = 1;
  BlockwiseScalars k;
  template <class V>
  void step(V& p, V g, V& s, V&) const {
    V gd = vfma(V(k.wd), p, g);
    s = vfma(V(k.b1), s, V(k.omb1) * (gd * gd));
    p = vfma(V(k.neg_lr), gd / (vsqrt(s) + V(k.eps)), p);
  }
};

struct Adagrad {
  static constexpr int kStates = 1;
  BlockwiseScalars k;
  template <class V>
  void step(V& p, V g, V& s, V&) const {
    V gd = vfma(V(k.wd), p, g);
    s = vfma(gd, gd, s);
    p = vfma(V(k.neg_lr), gd / (vsqrt(s) + V(k.eps)), p);
  }
};

struct Lion {
  static constexpr int kStates = 1;
  BlockwiseScalars k;
  template <class V>
  void step(V& p, V g, V& s, V&) const {
    V q = vfma(V(k.neg_decay), p, p);
    V d = vsign(vfma(V(k.b1), s, V(k.omb1) * g));
    s = vfma(V(k.b2), s, V(k.omb2) * g);
    p = vfma(V(k.neg_lr), d, q);
  }
};

struct Adam {
  static constexpr int kStates = 2;
  BlockwiseScalars k;
  template <class V>
  void step(V& p, V g, V& m, V& v) const {
    V gd = vfma(V(k.wd), p, g);
    m = vfma(V(k.b1), m, V(k.omb1) * gd);
    v = vfma(V(k.b2), v, V(k.omb2) * (gd * gd));
    V denom = vfma(vsqrt(v), V(k.inv_sqrt_c2), V(k.eps));
    p = vfma(V(k.neg_step), m / denom, vfma(V(k.neg_decay), p, p));
  }
};

struct Lamb {
  static constexpr int kStates = 2;
  BlockwiseScalars k;
  template <class V>
  V update(V p, V g, V& m, V& v) const {
    m = vfma(V(k.b1), m, V(k.omb1) * g);
    v = vfma(V(k.b2), v, V(k.omb2) * (g * g));
    V denom = vfma(vsqrt(v), V(k.inv_sqrt_c2), V(k.eps));
    return vfma(V(k.lamb_wd), p, V(k.inv_c1) * (m / denom));
  }
  template <class V>
  void step(V& p, V g, V& m, V& v) const {
    p = vfma(V(k.neg_lr_scale), update(p, g, m, v), p);
  }
};

// ---- codes ----

template <int kBits>
inline int load_code(const uint8_t* codes, int64_t i) {
  if constexpr (kBits == 8) {
    return codes[i];
  } else {
    return (codes[i >> 1] >> ((i & 1) ? 0 : 4)) & 0xF;
  }
}

#ifdef KBIT_BLOCKWISE_AVX2
// n packed 4-bit codes (n even, <= 16) as n bytes in element order.
inline __m128i unpack_nibbles(__m128i packed) {
  __m128i b = _mm_cvtepu8_epi16(packed);
  __m128i even = _mm_srli_epi16(b, 4);  // high nibble
  __m128i odd = _mm_slli_epi16(_mm_and_si128(b, _mm_set1_epi16(0x0F)), 8);
  return _mm_or_si128(even, odd);
}
#endif

// ---- SIMD layers: W lanes of loads, dequantization and requantization ----
// Requantization goes through the codebook's bucket table (sign fix
// included, see BlockCodebook::build_table).

#if defined(KBIT_BLOCKWISE_AVX512) && defined(__AVX512VBMI__)
#define KBIT_BLOCKWISE_VBMI 1
// An 8-bit codebook's 256 values split into byte planes: bytes[k][c] is
// byte k (little-endian) of value c. Built per call (1 KB, 64 vector ops).
struct BytePlanes {
  alignas(64) uint8_t bytes[4][256];
  explicit BytePlanes(const float* values) {
    for (int c = 0; c < 256; c += 16) {
      const __m512i v = _mm512_loadu_si512(values + c);
      for (int k = 0; k < 4; ++k) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(bytes[k] + c),
                         _mm512_cvtepi32_epi8(_mm512_srli_epi32(v, 8 * k)));
      }
    }
  }
};
#endif

#if defined(KBIT_BLOCKWISE_AVX512)
#define KBIT_BLOCKWISE_SIMD 1
struct Simd {
  static constexpr int kW = 16;
  using F = V16;
  static F zero() { return _mm512_setzero_ps(); }
  static F load(const float* x) { return _mm512_loadu_ps(x); }
  static void store(float* x, F v) { _mm512_storeu_ps(x, v.v); }
  // max(m, |s|) for a running maximum m >= 0.
  static F max_abs(F m, F s) {
#ifdef __AVX512DQ__
    return _mm512_range_ps(m.v, s.v, 0x0B);  // larger magnitude, sign cleared
#else
    return _mm512_max_ps(m.v, _mm512_abs_ps(s.v));
#endif
  }
  static float hmax(F v) {
    return _mm512_reduce_max_ps(v.v);
  }
  static float hsum(F v) {
    return _mm512_reduce_add_ps(v.v);
  }

  // State values of the 16 elements from element i (i % 16 == 0).
  template <int kBits>
  static F dequant(const uint8_t* codes, int64_t i, const float* values,
                   F absmax) {
    __m128i b;
    if constexpr (kBits == 8) {
      b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + i));
    } else {
      b = unpack_nibbles(
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + i / 2)));
    }
    __m512i idx = _mm512_cvtepu8_epi32(b);
    if constexpr (kBits == 4) {  // 16 codes: one in-register permute
      const __m512 table = _mm512_loadu_ps(values);
      return _mm512_mul_ps(_mm512_permutexvar_ps(idx, table), absmax.v);
    }
    return _mm512_mul_ps(_mm512_i32gather_ps(idx, values, 4), absmax.v);
  }

#ifdef KBIT_BLOCKWISE_VBMI
  // State values of the 64 elements from codes (8-bit), as out[0..3]
  // (elements 16r .. 16r + 15 in out[r]): four byte lookups in registers
  // instead of gathers. Byte k of every code value comes from a 128-entry
  // two-register permute per half of the table, chosen by the code's top
  // bit; the byte planes are then interleaved into floats. The interleave
  // works within 128-bit lanes, so the codes are first reordered (a 4 x 4
  // transpose of 4-byte groups) to make the floats come out in order.
  static void dequant64(const uint8_t* codes, const BytePlanes& t, F absmax,
                        F* out) {
    // Position 16 L + 4 k + q takes element 16 k + 4 L + q.
    const __m512i order = _mm512_set_epi32(
        0x3f3e3d3c, 0x2f2e2d2c, 0x1f1e1d1c, 0x0f0e0d0c, 0x3b3a3938, 0x2b2a2928,
        0x1b1a1918, 0x0b0a0908, 0x37363534, 0x27262524, 0x17161514, 0x07060504,
        0x33323130, 0x23222120, 0x13121110, 0x03020100);
    const __m512i c = _mm512_permutexvar_epi8(order, _mm512_loadu_si512(codes));
    const __mmask64 top = _mm512_movepi8_mask(c);
    __m512i plane[4];
    for (int k = 0; k < 4; ++k) {
      const uint8_t* b = t.bytes[k];
      const __m512i lo = _mm512_permutex2var_epi8(_mm512_load_si512(b), c,
                                                  _mm512_load_si512(b + 64));
      const __m512i hi = _mm512_permutex2var_epi8(_mm512_load_si512(b + 128), c,
                                                  _mm512_load_si512(b + 192));
      plane[k] = _mm512_mask_blend_epi8(top, lo, hi);
    }
    const __m512i l01 = _mm512_unpacklo_epi8(plane[0], plane[1]);
    const __m512i h01 = _mm512_unpackhi_epi8(plane[0], plane[1]);
    const __m512i l23 = _mm512_unpacklo_epi8(plane[2], plane[3]);
    const __m512i h23 = _mm512_unpackhi_epi8(plane[2], plane[3]);
    const __m512i w[4] = {
        _mm512_unpacklo_epi16(l01, l23), _mm512_unpackhi_epi16(l01, l23),
        _mm512_unpacklo_epi16(h01, h23), _mm512_unpackhi_epi16(h01, h23)};
    for (int r = 0; r < 4; ++r) {
      out[r] = _mm512_mul_ps(_mm512_castsi512_ps(w[r]), absmax.v);
    }
  }
#endif

  // Codes of x in byte 2 of each lane (see BlockCodebook::Table).
  static __m512i index(const BlockCodebook::Table& t, __m512 x) {
    __m512i u = _mm512_castps_si512(x);
    const __m512i e =
        _mm512_i32gather_epi32(_mm512_srli_epi32(u, 16), t.entries, 4);
    return _mm512_add_epi32(e, _mm512_xor_si512(u, _mm512_srai_epi32(u, 31)));
  }

#ifdef KBIT_BLOCKWISE_VBMI
  // 8-bit codes of 64 states x * inv at out: byte 2 of four index vectors,
  // packed by two byte permutes (a narrowing store is slower).
  static void quantize64(const BlockCodebook::Table& t, const float* x, F inv,
                         uint8_t* out) {
    __m512i q[4];
    for (int r = 0; r < 4; ++r) {
      q[r] = index(t, _mm512_mul_ps(_mm512_loadu_ps(x + 16 * r), inv.v));
    }
    // Byte i < 32 of a pair: byte 4 i + 2 of the concatenated (q0, q1).
    const __m512i code_bytes = _mm512_set_epi32(
        0, 0, 0, 0, 0, 0, 0, 0, 0x7e7a7672, 0x6e6a6662, 0x5e5a5652, 0x4e4a4642,
        0x3e3a3632, 0x2e2a2622, 0x1e1a1612, 0x0e0a0602);
    const __m512i ab = _mm512_permutex2var_epi8(q[0], code_bytes, q[1]);
    const __m512i cd = _mm512_permutex2var_epi8(q[2], code_bytes, q[3]);
    _mm512_storeu_si512(out,
                        _mm512_inserti64x4(ab, _mm512_castsi512_si256(cd), 1));
  }
#endif

  // Codes of kQ states x * inv, stored at out (element kQ-aligned).
  static constexpr int kQ = 16;
  template <int kBits>
  static void quantize(const BlockCodebook::Table& t, const float* x, F inv,
                       uint8_t* out) {
    __m512i q = _mm512_srli_epi32(
        index(t, _mm512_mul_ps(_mm512_loadu_ps(x), inv.v)), 16);
    if constexpr (kBits == 8) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out),
                       _mm512_cvtepi32_epi8(q));
    } else {
      // qword j = q[2j] | q[2j + 1] << 32 -> byte q[2j] << 4 | q[2j + 1].
      q = _mm512_and_si512(q, _mm512_set1_epi32(0xFF));
      __m512i pair =
          _mm512_or_si512(_mm512_slli_epi64(q, 4), _mm512_srli_epi64(q, 32));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(out),
                       _mm512_cvtepi64_epi8(pair));
    }
  }
};
#elif defined(KBIT_BLOCKWISE_AVX2)
#define KBIT_BLOCKWISE_SIMD 1
struct Simd {
  static constexpr int kW = 8;
  using F = V8;
  static F zero() { return _mm256_setzero_ps(); }
  static F load(const float* x) { return _mm256_loadu_ps(x); }
  static void store(float* x, F v) { _mm256_storeu_ps(x, v.v); }
  static F max_abs(F m, F s) {
    return _mm256_max_ps(
        m.v,
        _mm256_and_ps(s.v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))));
  }
  static float hmax(F v) {
    alignas(32) float t[8];
    _mm256_store_ps(t, v.v);
    return *std::max_element(t, t + 8);
  }
  static float hsum(F v) {
    alignas(32) float t[8];
    _mm256_store_ps(t, v.v);
    float s = 0.0f;
    for (float x : t) s += x;
    return s;
  }

  template <int kBits>
  static F dequant(const uint8_t* codes, int64_t i, const float* values,
                   F absmax) {
    __m128i b;
    if constexpr (kBits == 8) {
      b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + i));
    } else {
      uint32_t w;
      std::memcpy(&w, codes + i / 2, 4);
      b = unpack_nibbles(_mm_cvtsi32_si128(int(w)));
    }
    __m256i idx = _mm256_cvtepu8_epi32(b);
    return _mm256_mul_ps(_mm256_i32gather_ps(values, idx, 4), absmax.v);
  }

  // Codes of x as int32 0..255 (see BlockCodebook::Table).
  static __m256i index(const BlockCodebook::Table& t, __m256 x) {
    __m256i u = _mm256_castps_si256(x);
    const __m256i e = _mm256_i32gather_epi32(
        reinterpret_cast<const int*>(t.entries), _mm256_srli_epi32(u, 16), 4);
    u = _mm256_xor_si256(u, _mm256_srai_epi32(u, 31));
    return _mm256_and_si256(_mm256_srli_epi32(_mm256_add_epi32(e, u), 16),
                            _mm256_set1_epi32(0xFF));
  }

  // 32 int32 codes (4 vectors, each 0..255) to 32 bytes in order.
  static __m256i pack32(__m256i a, __m256i b, __m256i c, __m256i d) {
    __m256i ab = _mm256_packus_epi32(a, b);
    __m256i cd = _mm256_packus_epi32(c, d);
    __m256i bytes = _mm256_packus_epi16(ab, cd);
    return _mm256_permutevar8x32_epi32(
        bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  }

  static constexpr int kQ = 32;
  template <int kBits>
  static void quantize(const BlockCodebook::Table& t, const float* x, F inv,
                       uint8_t* out) {
    __m256i q[4];
    for (int r = 0; r < 4; ++r) {
      q[r] = index(t, _mm256_mul_ps(_mm256_loadu_ps(x + 8 * r), inv.v));
    }
    __m256i bytes = pack32(q[0], q[1], q[2], q[3]);
    if constexpr (kBits == 8) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), bytes);
    } else {
      // Byte pairs (even, odd) -> one byte: even << 4 | odd.
      __m256i even = _mm256_and_si256(bytes, _mm256_set1_epi16(0x00FF));
      __m256i odd = _mm256_srli_epi16(bytes, 8);
      __m256i nib = _mm256_or_si256(_mm256_slli_epi16(even, 4), odd);
      __m256i packed = _mm256_packus_epi16(nib, nib);   // per 128-bit lane
      packed = _mm256_permute4x64_epi64(packed, 0x08);  // lanes 0, 2 low
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out),
                       _mm256_castsi256_si128(packed));
    }
  }
};
#endif

// ---- the driver ----

enum class Pass { step, norms };

// Software prefetch distance of the VBMI loop, in elements (4 KB of f32
// ahead: about 4 blocks of 256). The 8-bit step costs about 2.5 cycles per
// parameter with its data in cache and about 4 from memory, so the
// hardware prefetchers leave it waiting. Measured: bench_optim 1e8, three
// alternations with and without it, 8-bit vs 32-bit 0.90/0.93/0.90x
// against 0.88/0.88/0.81x, a gain of a few percent, within the host's
// noise. Prefetching a whole block before its loop was slower.
constexpr int64_t kPrefetchAhead = 1024;

// One block: elements [begin, begin + len) of block index blk.
struct BlockView {
  int64_t begin, len, blk;
};

template <class Rule, int kBits>
struct Driver {
  static constexpr int kS = Rule::kStates;
  const Rule& rule;
  const BlockwiseArgs& a;
#ifdef KBIT_BLOCKWISE_VBMI
  // In-register dequantization tables (8-bit; null: the gather path).
  const BytePlanes* planes1 = nullptr;
  const BytePlanes* planes2 = nullptr;
#endif

  // Runs the rule over one block; the new states go to buf1/buf2 (len
  // floats) and their max |.| to amax; the new parameter to p
  // (Pass::step), or sum u^2 and sum p^2 to acc (Pass::norms).
  template <Pass kPass>
  void update_block(const BlockView& b, float* buf1, float* buf2, float* amax,
                    double* acc) const {
    // Local copies: the stores to p could alias the scalars otherwise, and
    // every broadcast would be reloaded after each store.
    const Rule rule = this->rule;
#ifdef KBIT_BLOCKWISE_VBMI
    const BytePlanes* const planes1 = this->planes1;
    const BytePlanes* const planes2 = this->planes2;
#endif
    const uint8_t* const codes1 = a.s1.codes;
    const uint8_t* const codes2 = a.s2.codes;
    const float* cv1 = a.s1.codebook->values();
    const float* cv2 = kS == 2 ? a.s2.codebook->values() : nullptr;
    const float am1 = a.s1.absmax[b.blk];
    const float am2 = kS == 2 ? a.s2.absmax[b.blk] : 0.0f;
    float* p = a.p + b.begin;
    const float* g = a.g + b.begin;
    float mx1 = 0.0f, mx2 = 0.0f, usq = 0.0f, psq = 0.0f;
    int64_t i = 0;
#ifdef KBIT_BLOCKWISE_SIMD
    using F = Simd::F;
    F vm1 = Simd::zero(), vm2 = vm1, vu = vm1, vp = vm1;
    const F vam1(am1), vam2(am2);
    // kW elements from i with their dequantized states s1, s2.
    auto lanes = [&](int64_t j, F s1, F s2) {
      F pv = Simd::load(p + j), gv = Simd::load(g + j);
      if constexpr (kPass == Pass::step) {
        rule.step(pv, gv, s1, s2);
        Simd::store(p + j, pv);
      } else {
        F u = rule.update(pv, gv, s1, s2);
        vu = vfma(u, u, vu);
        vp = vfma(pv, pv, vp);
      }
      Simd::store(buf1 + j, s1);
      vm1 = Simd::max_abs(vm1, s1);
      if constexpr (kS == 2) {
        Simd::store(buf2 + j, s2);
        vm2 = Simd::max_abs(vm2, s2);
      }
    };
#ifdef KBIT_BLOCKWISE_VBMI
    if constexpr (kBits == 8) {
      if (planes1) {
        for (; i + 64 <= b.len; i += 64) {
          const F z = Simd::zero();
          F s1[4], s2[4] = {z, z, z, z};
          Simd::dequant64(codes1 + b.begin + i, *planes1, vam1, s1);
          if constexpr (kS == 2) {
            Simd::dequant64(codes2 + b.begin + i, *planes2, vam2, s2);
          }
          for (int r = 0; r < 4; ++r) lanes(i + 16 * r, s1[r], s2[r]);
          for (int r = 0; r < 4; ++r) {
            __builtin_prefetch(p + i + kPrefetchAhead + 16 * r, 1, 3);
            __builtin_prefetch(g + i + kPrefetchAhead + 16 * r, 0, 3);
          }
          __builtin_prefetch(codes1 + b.begin + i + kPrefetchAhead, 1, 3);
          if constexpr (kS == 2) {
            __builtin_prefetch(codes2 + b.begin + i + kPrefetchAhead, 1, 3);
          }
        }
      }
    }
#endif
    for (; i + Simd::kW <= b.len; i += Simd::kW) {
      F s1 = Simd::dequant<kBits>(a.s1.codes, b.begin + i, cv1, vam1);
      F s2 = Simd::zero();
      if constexpr (kS == 2) {
        s2 = Simd::dequant<kBits>(a.s2.codes, b.begin + i, cv2, vam2);
      }
      lanes(i, s1, s2);
    }
    mx1 = Simd::hmax(vm1);
    mx2 = Simd::hmax(vm2);
    if constexpr (kPass == Pass::norms) {
      acc[0] += Simd::hsum(vu);
      acc[1] += Simd::hsum(vp);
    }
#endif
    for (; i < b.len; ++i) {
      float s1 = cv1[load_code<kBits>(a.s1.codes, b.begin + i)] * am1;
      float s2 = 0.0f;
      if constexpr (kS == 2) {
        s2 = cv2[load_code<kBits>(a.s2.codes, b.begin + i)] * am2;
      }
      float pv = p[i];
      if constexpr (kPass == Pass::step) {
        rule.step(pv, g[i], s1, s2);
        p[i] = pv;
      } else {
        float u = rule.update(pv, g[i], s1, s2);
        usq = std::fma(u, u, usq);
        psq = std::fma(pv, pv, psq);
      }
      buf1[i] = s1;
      mx1 = std::max(mx1, std::fabs(s1));
      if constexpr (kS == 2) {
        buf2[i] = s2;
        mx2 = std::max(mx2, std::fabs(s2));
      }
    }
    if constexpr (kPass == Pass::norms) {
      acc[0] += usq;
      acc[1] += psq;
    }
    amax[0] = mx1;
    amax[1] = mx2;
  }

  // Requantizes len states of buf (new absmax amax) into the block's codes.
  static void requantize(const QuantState& s, const BlockView& b,
                         const float* buf, float amax) {
    const BlockCodebook& cb = *s.codebook;
    s.absmax[b.blk] = amax;
    const float inv = amax >= FLT_MIN ? 1.0f / amax : 0.0f;
    uint8_t* out = s.codes + (kBits == 8 ? b.begin : b.begin / 2);
    int64_t i = 0;
#ifdef KBIT_BLOCKWISE_SIMD
    if (cb.fast()) {
      const BlockCodebook::Table t = cb.table();
      const Simd::F vinv(inv);
#ifdef KBIT_BLOCKWISE_VBMI
      if constexpr (kBits == 8) {
        for (; i + 64 <= b.len; i += 64) {
          Simd::quantize64(t, buf + i, vinv, out + i);
        }
      }
#endif
      for (; i + Simd::kQ <= b.len; i += Simd::kQ) {
        Simd::quantize<kBits>(t, buf + i, vinv, out + (kBits == 8 ? i : i / 2));
      }
    }
#endif
    for (; i < b.len; ++i) {
      const int q = cb.quantize_index(buf[i] * inv);
      if constexpr (kBits == 8) {
        out[i] = uint8_t(q);
      } else if ((i & 1) == 0) {
        out[i / 2] = uint8_t(q << 4);  // low nibble 0 until the odd element
      } else {
        out[i / 2] = uint8_t(out[i / 2] | q);
      }
    }
  }

  void step_block(int64_t blk) const {
    alignas(64) float buf1[kBlockwiseMaxBlock];
    alignas(64) float buf2[kS == 2 ? kBlockwiseMaxBlock : 1];
    BlockView b{blk * a.block_size, 0, blk};
    b.len = std::min(a.block_size, a.n - b.begin);
    float amax[2];
    update_block<Pass::step>(b, buf1, buf2, amax, nullptr);
    requantize(a.s1, b, buf1, amax[0]);
    if constexpr (kS == 2) requantize(a.s2, b, buf2, amax[1]);
  }

  void norms_block(int64_t blk, double* acc) const {
    alignas(64) float buf1[kBlockwiseMaxBlock];
    alignas(64) float buf2[kS == 2 ? kBlockwiseMaxBlock : 1];
    BlockView b{blk * a.block_size, 0, blk};
    b.len = std::min(a.block_size, a.n - b.begin);
    float amax[2];
    update_block<Pass::norms>(b, buf1, buf2, amax, acc);
  }
};

int64_t num_blocks(const BlockwiseArgs& a) {
  return (a.n + a.block_size - 1) / a.block_size;
}

// Runs f(driver) with the in-register dequantization tables where they
// apply (8-bit, blocks of at least 64 elements).
template <class Rule, int kBits, class Fn>
auto with_driver(const Rule& rule, const BlockwiseArgs& a, Fn&& f) {
  Driver<Rule, kBits> d{rule, a};
#ifdef KBIT_BLOCKWISE_VBMI
  if constexpr (kBits == 8) {
    if (a.block_size >= 64 && a.n >= 64) {
      const BytePlanes t1(a.s1.codebook->values());
      const BytePlanes t2(Rule::kStates == 2 ? a.s2.codebook->values()
                                             : a.s1.codebook->values());
      d.planes1 = &t1;
      d.planes2 = &t2;
      return f(std::as_const(d));
    }
  }
#endif
  return f(std::as_const(d));
}

template <class Rule, int kBits>
void run_step(const Rule& rule, const BlockwiseArgs& a) {
  with_driver<Rule, kBits>(rule, a, [&](const Driver<Rule, kBits>& d) {
    const int64_t nb = num_blocks(a);
#pragma omp parallel for schedule(static) if (a.n >= kBlockwiseParallelMin)
    for (int64_t blk = 0; blk < nb; ++blk) d.step_block(blk);
  });
}

template <class Rule, int kBits>
BlockwiseNorms run_norms_with(const Driver<Rule, kBits>& d,
                              const BlockwiseArgs& a) {
  const int64_t nb = num_blocks(a);
  double usq = 0, psq = 0;
#pragma omp parallel for schedule(static) reduction(+ : usq, psq) if ( \
        a.n >= kBlockwiseParallelMin)
  for (int64_t blk = 0; blk < nb; ++blk) {
    double acc[2] = {0, 0};
    d.norms_block(blk, acc);
    usq += acc[0];
    psq += acc[1];
  }
  return {usq, psq};
}

template <class Rule, int kBits>
BlockwiseNorms run_norms(const Rule& rule, const BlockwiseArgs& a) {
  return with_driver<Rule, kBits>(rule, a, [&](const Driver<Rule, kBits>& d) {
    return run_norms_with(d, a);
  });
}

template <class Rule>
void dispatch_step(const Rule& rule, const BlockwiseArgs& a) {
  if (a.bits == 8) {
    run_step<Rule, 8>(rule, a);
  } else {
    run_step<Rule, 4>(rule, a);
  }
}

template <class Rule>
BlockwiseNorms dispatch_norms(const Rule& rule, const BlockwiseArgs& a) {
  return a.bits == 8 ? run_norms<Rule, 8>(rule, a)
                     : run_norms<Rule, 4>(rule, a);
}

}  // namespace

// ---- entry points ----

void check_blockwise_args(BlockwiseRule rule, const BlockwiseArgs& a) {
  const char* op = "[blockwise_step]";
  KBIT_CHECK(a.n >= 0, op, " expected n >= 0, got ", a.n);
  const int64_t b = a.block_size;
  KBIT_CHECK(
      b >= kBlockwiseMinBlock && b <= kBlockwiseMaxBlock && (b & (b - 1)) == 0,
      op, " expected block_size a power of two in [", kBlockwiseMinBlock, ", ",
      kBlockwiseMaxBlock, "], got ", b);
  KBIT_CHECK(a.bits == 8 || a.bits == 4, op, " expected bits 8 or 4, got ",
             a.bits);
  if (a.n == 0) return;
  KBIT_CHECK(a.p && a.g, op, " expected p and g, got null");
  const int want = a.bits == 8 ? 256 : 16;
  const int ns = blockwise_num_states(rule);
  for (int k = 0; k < ns; ++k) {
    const QuantState& s = k == 0 ? a.s1 : a.s2;
    KBIT_CHECK(s.codes && s.absmax && s.codebook, op, " expected state ", k + 1,
               " of ", blockwise_rule_name(rule),
               " with codes, absmax and codebook, got null");
    KBIT_CHECK(s.codebook->size() == want, op, " expected a codebook of ", want,
               " values for ", a.bits, "-bit state ", k + 1, ", got ",
               s.codebook->size());
  }
}

void blockwise_step(BlockwiseRule rule, const BlockwiseHyper& h,
                    const BlockwiseArgs& a) {
  check_blockwise_args(rule, a);
  if (a.n == 0) return;
  const BlockwiseScalars k = blockwise_scalars(rule, h);
  switch (rule) {
    case BlockwiseRule::momentum:
      return dispatch_step(Momentum{k}, a);
    case BlockwiseRule::nesterov:
      return dispatch_step(Nesterov{k}, a);
    case BlockwiseRule::lars:
      return dispatch_step(Lars{k}, a);
    case BlockwiseRule::rmsprop:
      return dispatch_step(Rmsprop{k}, a);
    case BlockwiseRule::adagrad:
      return dispatch_step(Adagrad{k}, a);
    case BlockwiseRule::lion:
      return dispatch_step(Lion{k}, a);
    case BlockwiseRule::adam:
      return dispatch_step(Adam{k}, a);
    case BlockwiseRule::lamb:
      return dispatch_step(Lamb{k}, a);
  }
}

BlockwiseNorms blockwise_norms(BlockwiseRule rule, const BlockwiseHyper& h,
                               const BlockwiseArgs& a) {
  KBIT_CHECK(rule == BlockwiseRule::lamb || rule == BlockwiseRule::lars,
             "[blockwise_norms] expected lamb or lars, got ",
             blockwise_rule_name(rule));
  check_blockwise_args(rule, a);
  if (a.n == 0) return {};
  const BlockwiseScalars k = blockwise_scalars(rule, h);
  if (rule == BlockwiseRule::lamb) return dispatch_norms(Lamb{k}, a);
  return dispatch_norms(Lars{k}, a);
}

// ---- codebook and nearest-code search ----

BlockCodebook::BlockCodebook(const float* values, int size) {
  KBIT_CHECK(size >= 2 && size <= 256,
             "[BlockCodebook] expected 2..256 values, got ", size);
  values_.assign(values, values + size);
  for (int i = 0; i < size; ++i) {
    KBIT_CHECK(std::isfinite(values_[i]),
               "[BlockCodebook] expected finite values, got ", values_[i],
               " at ", i);
    KBIT_CHECK(i == 0 || values_[i - 1] <= values_[i],
               "[BlockCodebook] expected ascending values, got ",
               values_[i - 1], " before ", values_[i], " at ", i);
  }
  mid_up_.resize(size - 1);
  for (int i = 0; i + 1 < size; ++i) {
    const double m = (double(values_[i]) + double(values_[i + 1])) / 2;
    float f = float(m);
    if (double(f) < m) f = std::nextafter(f, INFINITY);
    mid_up_[i] = f;
  }
  first_nonneg_ = int(std::lower_bound(values_.begin(), values_.end(), 0.0f) -
                      values_.begin());
  build_table();
}

// Bucket h (the top 16 bits of a float) holds the floats whose bit
// patterns are h << 16 .. h << 16 | 0xFFFF. Inf and NaN buckets (exponent
// 255) take the entries of the largest finite bucket of their sign.
void BlockCodebook::build_table() {
  constexpr uint32_t kBuckets = 1u << 16, kLow = 0xFFFF;
  const std::vector<float>& md = mid_up_;
  for (float m : md) {
    if (m == 0.0f) return;  // a midpoint at 0: binary search instead
  }
  for (size_t i = 1; i < md.size(); ++i) {
    if (!(md[i - 1] < md[i])) return;  // repeated codes
  }
  const bool is_signed = values_[0] < 0.0f;
  const uint32_t z = uint32_t(first_nonneg_);
  table_.assign(kBuckets, 0);
  for (uint32_t h = 0; h < kBuckets; ++h) {
    const bool neg = (h >> 15) != 0;
    const uint32_t hm = std::min(h & 0x7FFFu, 0x7F7Fu);  // finite magnitudes
    // The bucket's values [a, b].
    float a = std::bit_cast<float>(hm << 16);
    float b = std::bit_cast<float>(hm << 16 | kLow);
    if (neg && is_signed) {
      const float neg_b = -b;
      b = -a;
      a = neg_b;
    } else if (neg) {
      b = a = 0.0f;  // unsigned codebooks take negative x as +0
    }
    // Midpoints strictly below the bucket, and those in [a, b]. x in the
    // bucket counts the one inside iff x >= it, i.e. iff its low bits
    // (reversed for negatives) are >= the midpoint's t0: low > thr with thr
    // = t0 - 1 (or c + 1 when t0 is 0).
    const auto first = std::lower_bound(md.begin(), md.end(), a);
    const auto last = std::upper_bound(md.begin(), md.end(), b);
    if (last - first > 1) {
      table_.clear();
      return;
    }
    uint32_t c = uint32_t(first - md.begin());
    uint32_t thr = kLow;  // no midpoint: never incremented
    if (last - first == 1) {
      const uint32_t low = std::bit_cast<uint32_t>(*first) & kLow;
      const uint32_t t0 = neg ? low ^ kLow : low;
      if (t0 == 0) {
        ++c;
      } else {
        thr = t0 - 1;
      }
    }
    // The sign fix, folded in: a clear sign bit gives max(i, z), a set one
    // min(i, z - 1), where i = c + (low > thr) and z = first_nonneg.
    if (has_sign_fix() && !neg && c < z) c = z, thr = kLow;
    if (has_sign_fix() && neg && c >= z - 1) c = z - 1, thr = kLow;
    // The high bits of x' (u, or ~u for negative x).
    const uint32_t high = neg ? ~h & 0xFFFFu : h;
    table_[h] = (c << 16) + (kLow - thr) - (high << 16);
  }
}

BlockCodebook::Table BlockCodebook::table() const {
  return {table_.data()};
}

int BlockCodebook::quantize_table(float x) const {
  uint32_t u = std::bit_cast<uint32_t>(x);
  const uint32_t e = table_[u >> 16];
  if (u >> 31) u = ~u;
  return int(((e + u) >> 16) & 0xFF);
}

int BlockCodebook::nearest(float x) const {
  // #{j : x >= mid_up[j]} = index of the first mid_up > x; then the last
  // of equal codes, the argmin's upper index.
  int i = int(std::upper_bound(mid_up_.begin(), mid_up_.end(), x) -
              mid_up_.begin());
  while (i + 1 < size() && values_[i + 1] == values_[i]) ++i;
  return i;
}

int BlockCodebook::quantize_index(float x) const {
  if (fast()) return quantize_table(x);
  const int i = nearest(x);
  if (!has_sign_fix()) return i;
  if (std::signbit(x) && i >= first_nonneg_) return i - 1;
  if (!std::signbit(x) && i < first_nonneg_) return i + 1;
  return i;
}

void code_indices(const BlockCodebook& cb, const float* x, int64_t n,
                  uint8_t* idx) {
  int64_t i = 0;
#ifdef KBIT_BLOCKWISE_SIMD
  if (cb.fast()) {
    const BlockCodebook::Table t = cb.table();
    const Simd::F one(1.0f);
    for (; i + Simd::kQ <= n; i += Simd::kQ) {
      Simd::quantize<8>(t, x + i, one, idx + i);
    }
  }
#endif
  for (; i < n; ++i) idx[i] = uint8_t(cb.quantize_index(x[i]));
}

}  // namespace kbit::cpu
