// Fused blockwise-quantized optimizer steps: one driver templated on the
// update rule (a small policy with 1 or 2 states) and on the code width (8
// or 4 bits). The policies are written once against a tiny value type V,
// which is float for tails and a vector for the body; every multiply-add is
// an explicit fma, so both give bit-identical results and the compiler has
// no mul+add left to contract differently.
//
// SIMD layers: AVX-512 (16 lanes; built with -march=native on AVX-512
// machines), AVX2 + FMA (8 lanes), or scalar only. With AVX512-VBMI the
// 8-bit dequantization looks the codes up in registers (byte permutes over
// the codebook's byte planes) instead of gathering.
//
// Requantization, two paths, both exact:
// - AVX-512 with a proven affine map (affine_codes.h; the optimizers' maps
//   all have one): four one-register permutes and an fma per 16 states, no
//   gather; the rare vector with a state within a hair of a midpoint goes
//   to the table. Each block is requantized right after its own update,
//   and rules with a division update the parameter inside the first
//   state's requantization loop (finish_two_phase).
// - Otherwise one gather per 16 states from a 65536-entry table indexed by
//   the top 16 bits of the float, an xor and an add (BlockCodebook::Table),
//   and blocks are pipelined: the requantization of block k (its gathers)
//   is interleaved with the update of block k + 1 (its arithmetic), vector
//   by vector (see Pending).
//
// Measured (1 thread, 65536 parameters stepped back to back, TSC cycles
// per parameter, AdamW 8-bit: the median of OMP_NUM_THREADS=1 bench_optim
// 65536 --reps 300 --warm; the 32-bit step for scale):
//                                           8-bit   4-bit   32-bit
//   Zen 4 (EPYC, 2.6 GHz TSC), affine map    2.06    2.10    0.87
//     the same, parameter in the update      2.18    2.14
//   Zen 4, the gather pipeline               3.17    3.21
//   Xeon with AVX512-VBMI, gather pipeline   2.04            (earlier)
// On Zen 4 a 16-lane gather costs ~20 core cycles whatever its mask (on the
// Xeon ~8), so the gathers alone cost ~2 cycles per parameter there; a zmm
// sqrt takes 10 cycles and a division 6 (the 32-bit step's floor). On the
// Xeon the pipeline took the step from 2.42 to 2.19, and skipping the
// coupled-decay fma when wd = 0 and the flip for unsigned maps to 2.04; the
// AVX2 layer (-march=x86-64-v3 there) went from 4.88 to 2.76.
#include "kernels/cpu/optim_blockwise.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
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
// kSigned1/2: whether the optimizer gives a state a codebook with negative
// codes (the requantization is compiled for that case; see run_step).
// kL2: the coupled decay g' = fma(wd, p, g) is on (wd != 0); off, g' = g.
// Two-phase rules (kTwoPhase: the ones with a division) split step into
// states(p, g, s1, s2), the new states, and param(p, g, s1, s2), the new
// p from them; step is the two in a row, so both forms give the same bits
// (see Driver::finish_two_phase for why the split pays).

template <bool kL2, class V>
inline V coupled(const BlockwiseScalars& k, V p, V g) {
  if constexpr (kL2) {
    return vfma(V(k.wd), p, g);
  } else {
    return g;
  }
}

template <bool kL2>
struct Momentum {
  static constexpr int kStates = 1;
  static constexpr bool kSigned1 = true, kSigned2 = false;
  BlockwiseScalars k;
  template <class V>
  void step(V& p, V g, V& s, V&) const {
    s = vfma(V(k.mu), s, coupled<kL2>(k, p, g));
    p = vfma(V(k.neg_lr), s, p);
  }
};

template <bool kL2>
struct Nesterov {
  static constexpr int kStates = 1;
  static constexpr bool kSigned1 = true, kSigned2 = false;
  BlockwiseScalars k;
  template <class V>
  void step(V& p, V g, V& s, V&) const {
    V gd = coupled<kL2>(k, p, g);
    s = vfma(V(k.mu), s, gd);
    p = vfma(V(k.neg_lr), vfma(V(k.mu), s, gd), p);
  }
};

template <bool kL2>
struct Lars {
  static constexpr int kStates = 1;
  static constexpr bool kSigned1 = true, kSigned2 = false;
  BlockwiseScalars k;
  template <class V>
  V update(V p, V g, V& s, V&) const {
    s = vfma(V(k.mu), s, coupled<kL2>(k, p, g));
    return s;
  }
  template <class V>
  void step(V& p, V g, V& s, V& s2) const {
    p = vfma(V(k.neg_lr_scale), update(p, g, s, s2), p);
  }
};

template <bool kL2>
struct Rmsprop {
  static constexpr int kStates = 1;
  static constexpr bool kSigned1 = false, kSigned2 = false;
  static constexpr bool kTwoPhase = true;
  BlockwiseScalars k;
  template <class V>
  void states(V p, V g, V& s, V&) const {
    V gd = coupled<kL2>(k, p, g);
    s = vfma(V(k.b1), s, V(k.omb1) * (gd * gd));
  }
  template <class V>
  void param(V& p, V g, V s, V) const {
    V gd = coupled<kL2>(k, p, g);
    p = vfma(V(k.neg_lr), gd / (vsqrt(s) + V(k.eps)), p);
  }
  template <class V>
  void step(V& p, V g, V& s, V& s2) const {
    states(p, g, s, s2);
    param(p, g, s, s2);
  }
};

template <bool kL2>
struct Adagrad {
  static constexpr int kStates = 1;
  static constexpr bool kSigned1 = false, kSigned2 = false;
  static constexpr bool kTwoPhase = true;
  BlockwiseScalars k;
  template <class V>
  void states(V p, V g, V& s, V&) const {
    V gd = coupled<kL2>(k, p, g);
    s = vfma(gd, gd, s);
  }
  template <class V>
  void param(V& p, V g, V s, V) const {
    V gd = coupled<kL2>(k, p, g);
    p = vfma(V(k.neg_lr), gd / (vsqrt(s) + V(k.eps)), p);
  }
  template <class V>
  void step(V& p, V g, V& s, V& s2) const {
    states(p, g, s, s2);
    param(p, g, s, s2);
  }
};

struct Lion {
  static constexpr int kStates = 1;
  static constexpr bool kSigned1 = true, kSigned2 = false;
  BlockwiseScalars k;
  template <class V>
  void step(V& p, V g, V& s, V&) const {
    V q = vfma(V(k.neg_decay), p, p);
    V d = vsign(vfma(V(k.b1), s, V(k.omb1) * g));
    s = vfma(V(k.b2), s, V(k.omb2) * g);
    p = vfma(V(k.neg_lr), d, q);
  }
};

// Adam (kL2: its L2 decay) and AdamW (decoupled: kL2 off, neg_decay set).
template <bool kL2>
struct Adam {
  static constexpr int kStates = 2;
  static constexpr bool kSigned1 = true, kSigned2 = false;
  static constexpr bool kTwoPhase = true;
  BlockwiseScalars k;
  template <class V>
  void states(V p, V g, V& m, V& v) const {
    V gd = coupled<kL2>(k, p, g);
    m = vfma(V(k.b1), m, V(k.omb1) * gd);
    v = vfma(V(k.b2), v, V(k.omb2) * (gd * gd));
  }
  template <class V>
  void param(V& p, V, V m, V v) const {
    V denom = vfma(vsqrt(v), V(k.inv_sqrt_c2), V(k.eps));
    p = vfma(V(k.neg_step), m / denom, vfma(V(k.neg_decay), p, p));
  }
  template <class V>
  void step(V& p, V g, V& m, V& v) const {
    states(p, g, m, v);
    param(p, g, m, v);
  }
};

struct Lamb {
  static constexpr int kStates = 2;
  static constexpr bool kSigned1 = true, kSigned2 = false;
  static constexpr bool kTwoPhase = true;
  BlockwiseScalars k;
  template <class V>
  void states(V, V g, V& m, V& v) const {
    m = vfma(V(k.b1), m, V(k.omb1) * g);
    v = vfma(V(k.b2), v, V(k.omb2) * (g * g));
  }
  // u from the new states.
  template <class V>
  V unit(V p, V m, V v) const {
    V denom = vfma(vsqrt(v), V(k.inv_sqrt_c2), V(k.eps));
    return vfma(V(k.lamb_wd), p, V(k.inv_c1) * (m / denom));
  }
  template <class V>
  V update(V p, V g, V& m, V& v) const {
    states(p, g, m, v);
    return unit(p, m, v);
  }
  template <class V>
  void param(V& p, V, V m, V v) const {
    p = vfma(V(k.neg_lr_scale), unit(p, m, v), p);
  }
  template <class V>
  void step(V& p, V g, V& m, V& v) const {
    states(p, g, m, v);
    param(p, g, m, v);
  }
};

template <class Rule>
constexpr bool two_phase() {
  if constexpr (requires { Rule::kTwoPhase; }) {
    return Rule::kTwoPhase;
  } else {
    return false;
  }
}

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

  // Codes of x in byte 2 of each lane (see BlockCodebook::Table). kFlip:
  // 1 for a table with flip (signed codebook), 0 without, -1 reads t.flip.
  template <int kFlip>
  static __m512i index(const BlockCodebook::Table& t, __m512 x) {
    const __m512i u = _mm512_castps_si512(x);
    const __m512i e =
        _mm512_i32gather_epi32(_mm512_srli_epi32(u, 16), t.entries, 4);
    if constexpr (kFlip == 0) {
      return _mm512_add_epi32(e, u);
    } else {
      __m512i sign = _mm512_srai_epi32(u, 31);
      if constexpr (kFlip < 0) {
        sign = _mm512_and_si512(sign, _mm512_set1_epi32(t.flip ? -1 : 0));
      }
      return _mm512_add_epi32(e, _mm512_xor_si512(u, sign));
    }
  }

#ifdef KBIT_BLOCKWISE_VBMI
  // The 64 codes in byte 2 of q[0..3] as 64 bytes: two byte permutes (a
  // narrowing store is slower).
  static __m512i packed64(const __m512i* q) {
    // Byte i < 32 of a pair: byte 4 i + 2 of the concatenated (q0, q1).
    const __m512i code_bytes = _mm512_set_epi32(
        0, 0, 0, 0, 0, 0, 0, 0, 0x7e7a7672, 0x6e6a6662, 0x5e5a5652, 0x4e4a4642,
        0x3e3a3632, 0x2e2a2622, 0x1e1a1612, 0x0e0a0602);
    const __m512i ab = _mm512_permutex2var_epi8(q[0], code_bytes, q[1]);
    const __m512i cd = _mm512_permutex2var_epi8(q[2], code_bytes, q[3]);
    return _mm512_inserti64x4(ab, _mm512_castsi512_si256(cd), 1);
  }
  static void pack64(const __m512i* q, uint8_t* out) {
    _mm512_storeu_si512(out, packed64(q));
  }

  // 8-bit codes of 64 states x * inv at out.
  template <int kFlip>
  static void quantize64(const BlockCodebook::Table& t, const float* x, F inv,
                         uint8_t* out) {
    __m512i q[4];
    for (int r = 0; r < 4; ++r) {
      q[r] = index<kFlip>(t, _mm512_mul_ps(_mm512_loadu_ps(x + 16 * r), inv.v));
    }
    pack64(q, out);
  }
#endif

  // Codes of kQ states x * inv, stored at out (element kQ-aligned).
  static constexpr int kQ = 16;
  template <int kBits, int kFlip>
  static void quantize(const BlockCodebook::Table& t, const float* x, F inv,
                       uint8_t* out) {
    __m512i q = _mm512_srli_epi32(
        index<kFlip>(t, _mm512_mul_ps(_mm512_loadu_ps(x), inv.v)), 16);
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

  // ---- the gather-free path (affine_codes.h) ----

  // One codebook's affine map in registers.
  struct AffineRegs {
    __m512 split, slope, offset, clamp;
    __m512i flag_mask, mirror_k, mirror_max;
    explicit AffineRegs(const AffineCodes& t) {
      static_assert(kAffinePieces == 16, "one register per table");
      split = _mm512_loadu_ps(t.split);
      slope = _mm512_loadu_ps(t.slope);
      offset = _mm512_loadu_ps(t.offset);
      clamp = _mm512_loadu_ps(t.clamp);
      flag_mask = _mm512_set1_epi32(int(t.flag_mask));
      mirror_k = _mm512_set1_epi8(char(t.mirror_k));
      mirror_max = _mm512_set1_epi8(char(t.mirror_max));
    }
  };

  // The fixed-point codes of |x| (cpu::affine_c32, 16 lanes); flag gets
  // the lanes near a step and, with kSplitFlag, those on a split point.
  // Unsigned maps (no kMirror) take a negative x as 2^-29 (a signed max).
  // kClampTop: the upper clamp, which the optimizer's |x| < 2 or NaN/Inf
  // does without (affine_codes.h).
  template <bool kMirror, bool kSplitFlag, bool kClampTop>
  static __m512i affine_c32(const AffineRegs& r, __m512 x, __mmask16& flag) {
    const __m512i lo = _mm512_set1_epi32(int(kAffineLoBits));
    __m512i ua = _mm512_castps_si512(x);
    if constexpr (kMirror) {  // max(|x|, 2^-29), sign clear: one op
      ua = _mm512_castps_si512(
          _mm512_range_ps(x, _mm512_castsi512_ps(lo), 0x0B));
    } else {
      ua = _mm512_max_epi32(ua, lo);
    }
    if constexpr (kClampTop) {
      ua = _mm512_min_epu32(ua, _mm512_set1_epi32(int(kAffineHiBits)));
    }
    const __m512 a = _mm512_castsi512_ps(ua);
    // The segment in bits 0..3, all that vpermps reads (16 wraps to 0).
    __m512i j = _mm512_srli_epi32(ua, kAffineSegmentShift);
    const __m512 split = _mm512_permutexvar_ps(j, r.split);
    j = _mm512_mask_add_epi32(j, _mm512_cmp_ps_mask(a, split, _CMP_GE_OQ), j,
                              _mm512_set1_epi32(1));
    if constexpr (kSplitFlag) flag |= _mm512_cmp_ps_mask(a, split, _CMP_EQ_OQ);
    const __m512 line = _mm512_fmadd_ps(a, _mm512_permutexvar_ps(j, r.slope),
                                        _mm512_permutexvar_ps(j, r.offset));
    const __m512i c = _mm512_cvttps_epi32(
        _mm512_min_ps(line, _mm512_permutexvar_ps(j, r.clamp)));
    flag |= _mm512_testn_epi32_mask(c, r.flag_mask);
    return c;
  }

  // quantize<kBits, kFlip> through the affine map; a flagged lane sends
  // the 16 to the table.
  template <int kBits, int kFlip, bool kMirror, bool kSplitFlag, bool kClampTop>
  static void quantize_affine(const AffineRegs& r,
                              const BlockCodebook::Table& t, const float* x,
                              F inv, uint8_t* out) {
    const __m512 xv = _mm512_mul_ps(_mm512_loadu_ps(x), inv.v);
    __mmask16 flag = 0;
    __m512i q = _mm512_srli_epi32(
        affine_c32<kMirror, kSplitFlag, kClampTop>(r, xv, flag), 16);
    if (flag) return quantize<kBits, kFlip>(t, x, inv, out);
    if constexpr (kMirror) {  // negative lanes: min(K - q, max), K - q >= 0
      const __mmask16 neg = _mm512_movepi32_mask(_mm512_castps_si512(xv));
      const __m512i k = _mm512_and_si512(r.mirror_k, _mm512_set1_epi32(0xFF));
      const __m512i m =
          _mm512_max_epi32(_mm512_sub_epi32(k, q), _mm512_setzero_si512());
      q = _mm512_mask_min_epi32(
          q, neg, m, _mm512_and_si512(r.mirror_max, _mm512_set1_epi32(0xFF)));
    }
    if constexpr (kBits == 8) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out),
                       _mm512_cvtepi32_epi8(q));
    } else {
      __m512i pair =
          _mm512_or_si512(_mm512_slli_epi64(q, 4), _mm512_srli_epi64(q, 32));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(out),
                       _mm512_cvtepi64_epi8(pair));
    }
  }

#ifdef KBIT_BLOCKWISE_VBMI
  // The codes of 64 states x * inv at out (8-bit: 64 bytes; 4-bit: 32,
  // element 2i in the high nibble) through the affine map, the mirror on
  // the 64 packed bytes; a flagged lane sends the 64 to the table.
  template <int kBits, int kFlip, bool kMirror, bool kSplitFlag, bool kClampTop>
  static void quantize64_affine(const AffineRegs& r,
                                const BlockCodebook::Table& t, const float* x,
                                F inv, uint8_t* out) {
    __m512i q[4];
    __mmask16 flag = 0, neg[4];
    for (int k = 0; k < 4; ++k) {
      const __m512 xv = _mm512_mul_ps(_mm512_loadu_ps(x + 16 * k), inv.v);
      q[k] = affine_c32<kMirror, kSplitFlag, kClampTop>(r, xv, flag);
      if constexpr (kMirror) {
        neg[k] = _mm512_movepi32_mask(_mm512_castps_si512(xv));
      }
    }
    if (flag) {
      if constexpr (kBits == 8) {
        quantize64<kFlip>(t, x, inv, out);
      } else {
        for (int k = 0; k < 4; ++k) {
          quantize<4, kFlip>(t, x + 16 * k, inv, out + 8 * k);
        }
      }
      return;
    }
    __m512i bytes = packed64(q);
    if constexpr (kMirror) {
      const __mmask64 n = _mm512_kunpackd(_mm512_kunpackw(neg[3], neg[2]),
                                          _mm512_kunpackw(neg[1], neg[0]));
      bytes = _mm512_mask_subs_epu8(bytes, n, r.mirror_k, bytes);
      bytes = _mm512_mask_min_epu8(bytes, n, bytes, r.mirror_max);
    }
    if constexpr (kBits == 8) {
      _mm512_storeu_si512(out, bytes);
    } else {  // byte pair (even, odd) -> even * 16 + odd
      const __m512i pairs =
          _mm512_maddubs_epi16(bytes, _mm512_set1_epi16(0x0110));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out),
                          _mm512_cvtepi16_epi8(pairs));
    }
  }
#endif
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
    if constexpr (kBits == 4) {  // 16 codes: two in-register permutes
      const __m256 lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(values), idx);
      const __m256 hi =
          _mm256_permutevar8x32_ps(_mm256_loadu_ps(values + 8), idx);
      // Code bit 3 moved to the sign bit picks the upper half.
      const __m256 upper = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
      return _mm256_mul_ps(_mm256_blendv_ps(lo, hi, upper), absmax.v);
    }
    return _mm256_mul_ps(_mm256_i32gather_ps(values, idx, 4), absmax.v);
  }

  // Codes of x as int32 0..255 (see BlockCodebook::Table; kFlip as in
  // the AVX-512 layer).
  template <int kFlip>
  static __m256i index(const BlockCodebook::Table& t, __m256 x) {
    __m256i u = _mm256_castps_si256(x);
    const __m256i e = _mm256_i32gather_epi32(
        reinterpret_cast<const int*>(t.entries), _mm256_srli_epi32(u, 16), 4);
    if constexpr (kFlip != 0) {
      __m256i sign = _mm256_srai_epi32(u, 31);
      if constexpr (kFlip < 0) {
        sign = _mm256_and_si256(sign, _mm256_set1_epi32(t.flip ? -1 : 0));
      }
      u = _mm256_xor_si256(u, sign);
    }
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
  template <int kBits, int kFlip>
  static void quantize(const BlockCodebook::Table& t, const float* x, F inv,
                       uint8_t* out) {
    __m256i q[4];
    for (int r = 0; r < 4; ++r) {
      q[r] = index<kFlip>(t, _mm256_mul_ps(_mm256_loadu_ps(x + 8 * r), inv.v));
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

// step: new p and states; states: the states only (two-phase rules, the
// parameter in finish_two_phase); norms: sums for the trust ratio.
enum class Pass { step, states, norms };

// Software prefetch distance of the update loops, in elements (2 KB of f32
// ahead: two blocks of 256). The hardware prefetchers alone leave the loops
// waiting. Measured with the block pipeline: bench_optim 1e8, 8-bit vs
// 32-bit over three alternations each: no prefetch 1.14/1.16/1.17x, 256
// elements 1.33/1.04/1.34x, 512 1.35/1.38/1.34x and 1.39/1.41/1.31x, 768
// 1.36/1.31/1.28x, 1024 1.37/1.13/1.29x, 2048 1.30/1.11/1.25x.
constexpr int64_t kPrefetchAhead = 512;
// Two-phase rules read p only in finish_two_phase, which prefetches it
// there, this far ahead, so the block's reads are spread over its loops
// instead of bunched in the update (Zen 4, bench_optim 1e8, 2 threads,
// AdamW 8-bit, medians of 8 paired runs: p prefetched in the update at
// 512 1.00, in the parameter loop at 512 0.95, at 256 0.92, at 128 0.94).
constexpr int64_t kParamPrefetchAhead = 256;

// One block: elements [begin, begin + len) of block index blk.
struct BlockView {
  int64_t begin, len, blk;
};

// A block whose new states wait for requantization. On the table path the
// step pipelines blocks: block k is requantized while block k + 1 is
// updated, so the gathers of the requantization run beside the arithmetic
// of the update instead of after it (measured on the Xeon: 1 thread, 65536
// parameters, AdamW 8-bit 2.42 -> 2.19 cycles per parameter). With affine
// maps a block's job is finished as soon as it starts (pipelined()).
struct Pending {
  const float* x[2] = {nullptr, nullptr};  // new states (len floats each)
  float inv[2] = {0.0f, 0.0f};             // 1 / new absmax (0 below FLT_MIN)
  uint8_t* out[2] = {nullptr, nullptr};    // codes of the block (8-bit: its
                                           // first element; 4-bit: begin / 2)
  int64_t len = 0;                         // 0: nothing pending
  int64_t done = 0;  // elements requantized inside the next update
};

inline float inverse_absmax(float amax) {
  return amax >= FLT_MIN ? 1.0f / amax : 0.0f;
}

// A per-range action run just before requantize codes elements [i, i + n)
// (finish_two_phase's parameter update); nothing by default.
struct NoAction {
  void operator()(int64_t, int64_t) const {}
};

#ifdef KBIT_BLOCKWISE_AVX512
// Codes of buf[i, len) * inv through the affine map, as far as whole
// vectors go (out: the codes of element 0); returns where it stopped.
// kClampTop: any x (code_indices); without it the optimizer's |x| < 2 or
// NaN/Inf (affine_codes.h).
template <int kBits, int kFlip, bool kClampTop, bool kMirror, bool kSplitFlag,
          class Before>
int64_t requantize_affine_with(const AffineCodes& aff,
                               const BlockCodebook::Table& t, const float* buf,
                               Simd::F vinv, uint8_t* out, int64_t i,
                               int64_t len, Before& before) {
  const Simd::AffineRegs r(aff);
#ifdef KBIT_BLOCKWISE_VBMI
  for (; i + 64 <= len; i += 64) {
    before(i, 64);
    Simd::quantize64_affine<kBits, kFlip, kMirror, kSplitFlag, kClampTop>(
        r, t, buf + i, vinv, out + (kBits == 8 ? i : i / 2));
  }
#endif
  for (; i + Simd::kQ <= len; i += Simd::kQ) {
    before(i, Simd::kQ);
    Simd::quantize_affine<kBits, kFlip, kMirror, kSplitFlag, kClampTop>(
        r, t, buf + i, vinv, out + (kBits == 8 ? i : i / 2));
  }
  return i;
}

template <int kBits, int kFlip, bool kClampTop = false, class Before>
int64_t requantize_affine(const AffineCodes& aff, const BlockCodebook::Table& t,
                          const float* buf, Simd::F vinv, uint8_t* out,
                          int64_t i, int64_t len, Before& before) {
  if (!aff.mirror) {
    return requantize_affine_with<kBits, kFlip, kClampTop, false, false>(
        aff, t, buf, vinv, out, i, len, before);
  }
  if (aff.flag_splits) {
    return requantize_affine_with<kBits, kFlip, kClampTop, true, true>(
        aff, t, buf, vinv, out, i, len, before);
  }
  return requantize_affine_with<kBits, kFlip, kClampTop, true, false>(
      aff, t, buf, vinv, out, i, len, before);
}
#endif

// Whether codebooks with an affine map use it (requant_path()).
bool affine_on();

// kFlip1/2: the requantization's flip (1, 0, or -1 for the table's own; see
// Simd::index) for state 1 and 2.
template <class Rule, int kBits, int kFlip1, int kFlip2>
struct Driver {
  static constexpr int kS = Rule::kStates;
  const Rule& rule;
  const BlockwiseArgs& a;
  const bool affine = affine_on();  // read once per step
#ifdef KBIT_BLOCKWISE_VBMI
  // In-register dequantization tables (8-bit; null: the gather path).
  const BytePlanes* planes1 = nullptr;
  const BytePlanes* planes2 = nullptr;
#endif

  BlockView view(int64_t blk) const {
    BlockView b{blk * a.block_size, 0, blk};
    b.len = std::min(a.block_size, a.n - b.begin);
    return b;
  }

  // Runs the rule over one block; the new states go to buf1/buf2 (len
  // floats) and their max |.| to amax; the new parameter to p
  // (Pass::step; Pass::states leaves p to finish_two_phase), or sum u^2 and
  // sum p^2 to acc (Pass::norms). With kJob,
  // the vector loops also requantize the pending block's leading elements
  // as they go (64 at a time in the VBMI loop, kQ in the others);
  // job->done says how far they got.
  template <Pass kPass, bool kJob>
  void update_block(const BlockView& b, float* buf1, float* buf2, float* amax,
                    double* acc, [[maybe_unused]] Pending* job) const {
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
      } else if constexpr (kPass == Pass::states) {
        rule.states(pv, gv, s1, s2);
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
    // The job in locals, for the same reason as the rule.
    [[maybe_unused]] const BlockCodebook::Table jt1 = t1, jt2 = t2;
    [[maybe_unused]] const float* const jx1 = kJob ? job->x[0] : nullptr;
    [[maybe_unused]] const float* const jx2 = kJob ? job->x[1] : nullptr;
    [[maybe_unused]] uint8_t* const jout1 = kJob ? job->out[0] : nullptr;
    [[maybe_unused]] uint8_t* const jout2 = kJob ? job->out[1] : nullptr;
    [[maybe_unused]] const F jinv1(kJob ? job->inv[0] : 0.0f);
    [[maybe_unused]] const F jinv2(kJob ? job->inv[1] : 0.0f);
#ifdef KBIT_BLOCKWISE_VBMI
    if constexpr (kBits == 8) {
      if (planes1) {
        // 64 elements from i; with_job: requantize the job's elements i ..
        // i + 63 too, one vector of each state after each vector of update.
        auto chunk = [&](int64_t i, auto with_job) {
          const F z = Simd::zero();
          F s1[4], s2[4] = {z, z, z, z};
          Simd::dequant64(codes1 + b.begin + i, *planes1, vam1, s1);
          if constexpr (kS == 2) {
            Simd::dequant64(codes2 + b.begin + i, *planes2, vam2, s2);
          }
          [[maybe_unused]] __m512i q1[4], q2[4];
          for (int r = 0; r < 4; ++r) {
            lanes(i + 16 * r, s1[r], s2[r]);
            if constexpr (decltype(with_job)::value) {
              const int64_t j = i + 16 * r;
              q1[r] = Simd::index<kFlip1>(
                  jt1, _mm512_mul_ps(Simd::load(jx1 + j).v, jinv1.v));
              if constexpr (kS == 2) {
                q2[r] = Simd::index<kFlip2>(
                    jt2, _mm512_mul_ps(Simd::load(jx2 + j).v, jinv2.v));
              }
            }
          }
          if constexpr (decltype(with_job)::value) {
            Simd::pack64(q1, jout1 + i);
            if constexpr (kS == 2) Simd::pack64(q2, jout2 + i);
          }
          for (int r = 0; r < 4; ++r) {
            if constexpr (kPass != Pass::states) {
              __builtin_prefetch(p + i + kPrefetchAhead + 16 * r, 1, 3);
            }
            __builtin_prefetch(g + i + kPrefetchAhead + 16 * r, 0, 3);
          }
          __builtin_prefetch(codes1 + b.begin + i + kPrefetchAhead, 1, 3);
          if constexpr (kS == 2) {
            __builtin_prefetch(codes2 + b.begin + i + kPrefetchAhead, 1, 3);
          }
        };
        if constexpr (kJob) {
          const int64_t nj =
              fast_tables() ? std::min(b.len, job->len) & ~63 : 0;
          for (; i < nj; i += 64) chunk(i, std::true_type{});
          job->done = nj;
        }
        for (; i + 64 <= b.len; i += 64) chunk(i, std::false_type{});
      }
    }
#endif
    auto vector = [&](int64_t j) {
      // The same prefetch as the VBMI loop: one per cache line of p and g,
      // one per 64 codes (measured: bench_optim 1e8, 4-bit vs 32-bit
      // 1.13/1.19/1.16x without, 1.32/1.29/1.38x with).
      if ((j & 15) == 0) {
        if constexpr (kPass != Pass::states) {
          __builtin_prefetch(p + j + kPrefetchAhead, 1, 3);
        }
        __builtin_prefetch(g + j + kPrefetchAhead, 0, 3);
        if ((j & 63) == 0) {
          const int64_t c =
              (kBits == 8 ? b.begin + j : (b.begin + j) / 2) + kPrefetchAhead;
          __builtin_prefetch(codes1 + c, 1, 3);
          if constexpr (kS == 2) __builtin_prefetch(codes2 + c, 1, 3);
        }
      }
      F s1 = Simd::dequant<kBits>(codes1, b.begin + j, cv1, vam1);
      F s2 = Simd::zero();
      if constexpr (kS == 2) {
        s2 = Simd::dequant<kBits>(codes2, b.begin + j, cv2, vam2);
      }
      lanes(j, s1, s2);
    };
    if constexpr (kJob) {
      // The other layers (and 4-bit): after each kQ elements of update,
      // the job's same kQ elements; unless the VBMI loop took the job.
      if (i == 0 && job->done == 0 && fast_tables()) {
        constexpr int64_t kQ = Simd::kQ;
        const int64_t nj = std::min(b.len, job->len) / kQ * kQ;
        for (; i < nj; i += kQ) {
          for (int64_t r = 0; r < kQ; r += Simd::kW) vector(i + r);
          const int64_t at = kBits == 8 ? i : i / 2;
          Simd::quantize<kBits, kFlip1>(jt1, jx1 + i, jinv1, jout1 + at);
          if constexpr (kS == 2) {
            Simd::quantize<kBits, kFlip2>(jt2, jx2 + i, jinv2, jout2 + at);
          }
        }
        job->done = nj;
      }
    }
    for (; i + Simd::kW <= b.len; i += Simd::kW) vector(i);
    mx1 = Simd::hmax(vm1);
    mx2 = Simd::hmax(vm2);
    if constexpr (kPass == Pass::norms) {
      acc[0] += Simd::hsum(vu);
      acc[1] += Simd::hsum(vp);
    }
#endif
    for (; i < b.len; ++i) {
      float s1 = cv1[load_code<kBits>(codes1, b.begin + i)] * am1;
      float s2 = 0.0f;
      if constexpr (kS == 2) {
        s2 = cv2[load_code<kBits>(codes2, b.begin + i)] * am2;
      }
      float pv = p[i];
      if constexpr (kPass == Pass::step) {
        rule.step(pv, g[i], s1, s2);
        p[i] = pv;
      } else if constexpr (kPass == Pass::states) {
        rule.states(pv, g[i], s1, s2);
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

  // Both states' codebooks have the bucket table (the interleaved path).
  bool fast_tables() const {
    return a.s1.codebook->fast() && (kS == 1 || a.s2.codebook->fast());
  }

  // Codes of states buf[from, len) (scaled by inv) into out, which points
  // at the codes of the block's first element; from is 0 or where the
  // interleaved loop stopped (a multiple of Simd::kQ, so even). before(i,
  // n) runs once for each range, just before its codes.
  template <int kFlip, class Before = NoAction>
  static void requantize(const BlockCodebook& cb, const float* buf, float inv,
                         uint8_t* out, int64_t from, int64_t len,
                         [[maybe_unused]] bool affine, Before before = {}) {
    int64_t i = from;
#ifdef KBIT_BLOCKWISE_SIMD
    if (cb.fast()) {
      const BlockCodebook::Table t = cb.table();
      const Simd::F vinv(inv);
#ifdef KBIT_BLOCKWISE_AVX512
      if (const AffineCodes* aff = cb.affine(); aff && affine) {
        i = requantize_affine<kBits, kFlip>(*aff, t, buf, vinv, out, i, len,
                                            before);
      }
#endif
#ifdef KBIT_BLOCKWISE_VBMI
      if constexpr (kBits == 8) {
        for (; i + 64 <= len; i += 64) {
          before(i, 64);
          Simd::quantize64<kFlip>(t, buf + i, vinv, out + i);
        }
      }
#endif
      for (; i + Simd::kQ <= len; i += Simd::kQ) {
        before(i, Simd::kQ);
        Simd::quantize<kBits, kFlip>(t, buf + i, vinv,
                                     out + (kBits == 8 ? i : i / 2));
      }
    }
#endif
    if (i < len) before(i, len - i);
    for (; i < len; ++i) {
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

  // Stores the block's new absmax and returns its pending requantization.
  Pending start(const BlockView& b, const float* buf1, const float* buf2,
                const float* amax) const {
    Pending job;
    job.len = b.len;
    const int64_t at = kBits == 8 ? b.begin : b.begin / 2;
    a.s1.absmax[b.blk] = amax[0];
    job.x[0] = buf1;
    job.inv[0] = inverse_absmax(amax[0]);
    job.out[0] = a.s1.codes + at;
    if constexpr (kS == 2) {
      a.s2.absmax[b.blk] = amax[1];
      job.x[1] = buf2;
      job.inv[1] = inverse_absmax(amax[1]);
      job.out[1] = a.s2.codes + at;
    }
    return job;
  }

  // Requantizes what the interleaved loop left of the pending block.
  void finish(Pending& job) const {
    if (job.done < job.len) {
      requantize<kFlip1>(*a.s1.codebook, job.x[0], job.inv[0], job.out[0],
                         job.done, job.len, affine);
      if constexpr (kS == 2) {
        requantize<kFlip2>(*a.s2.codebook, job.x[1], job.inv[1], job.out[1],
                           job.done, job.len, affine);
      }
    }
    job = Pending{};
  }

  // The parameter update of a two-phase rule (its states already updated
  // in buf, job unstarted), run range by range inside the requantization
  // of the first state. Those loops use the permute units and the update's
  // square root and division the divider, which otherwise idles there: on
  // Zen 4 (AdamW 8-bit, 1 thread in cache) 2.14 -> 2.04 TSC cycles per
  // parameter against the update in one pass.
  void finish_two_phase(const BlockView& b, Pending& job) const {
    const Rule rule = this->rule;
    float* const p = a.p + b.begin;
    const float* const g = a.g + b.begin;
    const float* const x1 = job.x[0];
    const float* const x2 = job.x[kS - 1];
    auto param = [&](int64_t i, int64_t n) {
      for (int64_t k = i; k < i + n; k += 16) {  // a cache line of p
        __builtin_prefetch(p + k + kParamPrefetchAhead, 1, 3);
      }
      int64_t k = i;
#ifdef KBIT_BLOCKWISE_SIMD
      for (; k + Simd::kW <= i + n; k += Simd::kW) {
        Simd::F pv = Simd::load(p + k);
        rule.param(pv, Simd::load(g + k), Simd::load(x1 + k),
                   Simd::load(x2 + k));
        Simd::store(p + k, pv);
      }
#endif
      for (; k < i + n; ++k) {
        float pv = p[k];
        rule.param(pv, g[k], x1[k], x2[k]);
        p[k] = pv;
      }
    };
    requantize<kFlip1>(*a.s1.codebook, x1, job.inv[0], job.out[0], 0, job.len,
                       affine, param);
    if constexpr (kS == 2) {
      requantize<kFlip2>(*a.s2.codebook, x2, job.inv[1], job.out[1], 0, job.len,
                         affine);
    }
    job = Pending{};
  }

  // The step over blocks [blk0, blk1), pipelined (see Pending). A block's
  // codes and absmax are read by its update and written only after it, so
  // every block sees its old state.
  void step_range(int64_t blk0, int64_t blk1) const {
    alignas(64) float bufs[2][kS][kBlockwiseMaxBlock];
    const bool pipe = pipelined();
    Pending job;
    int cur = 0;
    for (int64_t blk = blk0; blk < blk1; ++blk, cur ^= 1) {
      const BlockView b = view(blk);
      float* buf1 = bufs[cur][0];
      float* buf2 = bufs[cur][kS - 1];
      float amax[2];
      if constexpr (two_phase<Rule>()) {
        if (!pipe) {
          update_block<Pass::states, false>(b, buf1, buf2, amax, nullptr,
                                            nullptr);
          job = start(b, buf1, buf2, amax);
          finish_two_phase(b, job);
          continue;
        }
      }
      if (job.len > 0) {
        update_block<Pass::step, true>(b, buf1, buf2, amax, nullptr, &job);
      } else {
        update_block<Pass::step, false>(b, buf1, buf2, amax, nullptr, nullptr);
      }
      finish(job);
      job = start(b, buf1, buf2, amax);
      if (!pipe) finish(job);
    }
    finish(job);
  }

  // Whether blocks are pipelined (see Pending). With affine maps for every
  // state (AVX-512) requantization has no gathers to hide, and the
  // pipeline's second set of tables would only crowd the registers: each
  // block is requantized right after its update instead.
  bool pipelined() const {
#ifdef KBIT_BLOCKWISE_AVX512
    return !(affine && a.s1.codebook->affine() &&
             (kS == 1 || a.s2.codebook->affine()));
#else
    return true;
#endif
  }

  void norms_block(int64_t blk, double* acc) const {
    alignas(64) float buf1[kBlockwiseMaxBlock];
    alignas(64) float buf2[kS == 2 ? kBlockwiseMaxBlock : 1];
    float amax[2];
    update_block<Pass::norms, false>(view(blk), buf1, buf2, amax, acc, nullptr);
  }

#ifdef KBIT_BLOCKWISE_SIMD
  BlockCodebook::Table t1{}, t2{};  // the states' tables (fast codebooks)
#endif
};

int64_t num_blocks(const BlockwiseArgs& a) {
  return (a.n + a.block_size - 1) / a.block_size;
}

// Runs f(driver) with the in-register dequantization tables where they
// apply (8-bit, blocks of at least 64 elements).
template <class Rule, int kBits, int kFlip1, int kFlip2, class Fn>
auto with_driver(const Rule& rule, const BlockwiseArgs& a, Fn&& f) {
  Driver<Rule, kBits, kFlip1, kFlip2> d{rule, a};
#ifdef KBIT_BLOCKWISE_SIMD
  d.t1 = a.s1.codebook->table();
  d.t2 = Rule::kStates == 2 ? a.s2.codebook->table() : d.t1;
#endif
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

// Blocks [lo, hi) of nb for thread t of nt: contiguous ranges, split as
// OpenMP's schedule(static) splits them (the first nb % nt threads take one
// more), so the pages a run touched first stay with the same thread.
std::pair<int64_t, int64_t> thread_range(int64_t nb, int t, int nt) {
  const int64_t q = nb / nt, r = nb % nt;
  const int64_t lo = t * q + std::min<int64_t>(t, r);
  return {lo, lo + q + (t < r ? 1 : 0)};
}

template <class Rule, int kBits, int kFlip1, int kFlip2>
void run_step_with(const Rule& rule, const BlockwiseArgs& a) {
  with_driver<Rule, kBits, kFlip1, kFlip2>(rule, a, [&](const auto& d) {
    const int64_t nb = num_blocks(a);
    if (a.n < kBlockwiseParallelMin) return d.step_range(0, nb);
#pragma omp parallel
    {
      const auto [lo, hi] =
          thread_range(nb, omp_get_thread_num(), omp_get_num_threads());
      d.step_range(lo, hi);
    }
  });
}

// The requantization is compiled for the codebook signs the optimizer
// uses (Rule::kSigned1/2); other codebooks read the flip at run time.
template <class Rule, int kBits>
void run_step(const Rule& rule, const BlockwiseArgs& a) {
  const bool f1 = a.s1.codebook->table().flip;
  const bool f2 =
      Rule::kStates == 2 ? a.s2.codebook->table().flip : Rule::kSigned2;
  if (f1 == Rule::kSigned1 && f2 == Rule::kSigned2) {
    run_step_with<Rule, kBits, Rule::kSigned1 ? 1 : 0, Rule::kSigned2 ? 1 : 0>(
        rule, a);
  } else {
    run_step_with<Rule, kBits, -1, -1>(rule, a);
  }
}

template <class Rule, int kBits>
BlockwiseNorms run_norms(const Rule& rule, const BlockwiseArgs& a) {
  return with_driver<Rule, kBits, -1, -1>(rule, a, [&](const auto& d) {
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
    return BlockwiseNorms{usq, psq};
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

// Rules with the coupled decay: compiled with and without it.
template <template <bool> class Rule>
void dispatch_step_l2(const BlockwiseScalars& k, const BlockwiseArgs& a) {
  if (k.wd != 0.0f) {
    dispatch_step(Rule<true>{k}, a);
  } else {
    dispatch_step(Rule<false>{k}, a);
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
      return dispatch_step_l2<Momentum>(k, a);
    case BlockwiseRule::nesterov:
      return dispatch_step_l2<Nesterov>(k, a);
    case BlockwiseRule::lars:
      return dispatch_step_l2<Lars>(k, a);
    case BlockwiseRule::rmsprop:
      return dispatch_step_l2<Rmsprop>(k, a);
    case BlockwiseRule::adagrad:
      return dispatch_step_l2<Adagrad>(k, a);
    case BlockwiseRule::lion:
      return dispatch_step(Lion{k}, a);
    case BlockwiseRule::adam:
      return dispatch_step_l2<Adam>(k, a);
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
  if (k.wd != 0.0f) return dispatch_norms(Lars<true>{k}, a);
  return dispatch_norms(Lars<false>{k}, a);
}

// ---- the requantization path ----

namespace {

// 0: not yet chosen, else 1 + RequantPath (affine or table).
std::atomic<int> g_requant_path{0};

int path_code(RequantPath p) {
  return p == RequantPath::automatic ? 0 : 1 + int(p);
}

#ifdef KBIT_BLOCKWISE_AVX512
// A map shaped like bitsandbytes' dynamic one (decade i: 2^i (signed) or
// 2^(i + 1) (unsigned) points of an even grid on [0.1, 1] times 10^(i - 6),
// plus 0 and 1), to time the two paths on the optimizers' kind of map.
std::vector<float> dynamic_like(bool is_signed) {
  std::vector<float> v = {0.0f, 1.0f};
  for (int i = 0; i < 7; ++i) {
    const int levels = 1 << (i + (is_signed ? 0 : 1));
    for (int k = 0; k < levels; ++k) {
      const float x =
          float(std::pow(10.0, i - 6) * (0.1 + (k + 0.5) * 0.9 / levels));
      v.push_back(x);
      if (is_signed) v.push_back(-x);
    }
  }
  std::sort(v.begin(), v.end());
  return v;
}

// Times one AdamW 8-bit step of 16384 parameters (one thread, in cache)
// with each path, alternately, and keeps the faster minimum.
RequantPath measure_requant_path() {
  const std::vector<float> sv = dynamic_like(true), uv = dynamic_like(false);
  const BlockCodebook m_map(sv.data(), int(sv.size()));
  const BlockCodebook v_map(uv.data(), int(uv.size()));
  if (!m_map.affine() || !v_map.affine()) return RequantPath::table;
  constexpr int64_t kN = 16384, kBlock = 256, kReps = 7;
  static_assert(kN < kBlockwiseParallelMin, "timed on one thread");
  std::vector<float> p(kN), g(kN), am1(kN / kBlock, 0.0f), am2 = am1;
  uint32_t r = 12345;
  for (int64_t i = 0; i < kN; ++i) {
    r = r * 1664525u + 1013904223u;
    g[i] = float(int32_t(r)) * 1e-12f;
    p[i] = float(int32_t(r ^ 0x5bd1e995u)) * 1e-10f;
  }
  std::vector<uint8_t> c1(kN, uint8_t(m_map.nearest(0.0f)));
  std::vector<uint8_t> c2(kN, uint8_t(v_map.nearest(0.0f)));
  BlockwiseArgs a;
  a.n = kN, a.block_size = kBlock, a.bits = 8;
  a.p = p.data(), a.g = g.data();
  a.s1 = {c1.data(), am1.data(), &m_map};
  a.s2 = {c2.data(), am2.data(), &v_map};
  BlockwiseHyper h;
  double best[2] = {1e30, 1e30};
  for (int rep = 0; rep < kReps; ++rep) {
    for (int k = 0; k < 2; ++k) {
      g_requant_path.store(
          path_code(k == 0 ? RequantPath::affine : RequantPath::table));
      const auto t0 = std::chrono::steady_clock::now();
      blockwise_step(BlockwiseRule::adam, h, a);
      const std::chrono::duration<double> dt =
          std::chrono::steady_clock::now() - t0;
      best[k] = std::min(best[k], dt.count());
      ++h.step;
    }
  }
  return best[0] <= best[1] ? RequantPath::affine : RequantPath::table;
}
#endif

int resolve_requant_path() {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (const int p = g_requant_path.load(); p != 0) return p;
  const char* env = std::getenv("KBIT_REQUANT");
  const std::string want = env ? env : "automatic";
  KBIT_USER_CHECK(want == "automatic" || want == "affine" || want == "table",
                  "KBIT_REQUANT: expected automatic, affine or table, got '",
                  want, "'");
  RequantPath path = RequantPath::table;
#ifdef KBIT_BLOCKWISE_AVX512
  if (want == "affine") {
    path = RequantPath::affine;
  } else if (want == "automatic") {
    path = measure_requant_path();
  }
#endif
  g_requant_path.store(path_code(path));
  return path_code(path);
}

bool affine_on() {
  int p = g_requant_path.load(std::memory_order_relaxed);
  if (p == 0) p = resolve_requant_path();
  return p == path_code(RequantPath::affine);
}

}  // namespace

void set_requant_path(RequantPath path) {
#ifndef KBIT_BLOCKWISE_AVX512
  if (path == RequantPath::affine) path = RequantPath::table;
#endif
  g_requant_path.store(path_code(path));
}

RequantPath requant_path() {
  return affine_on() ? RequantPath::affine : RequantPath::table;
}

const char* requant_path_name(RequantPath path) {
  switch (path) {
    case RequantPath::automatic:
      return "automatic";
    case RequantPath::affine:
      return "affine";
    case RequantPath::table:
      return "table";
  }
  return "?";
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
  if (fast()) {
    affine_ = build_affine_codes(values_.data(), mid_up_.data(), size,
                                 first_nonneg_, has_sign_fix());
  }
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
  flip_ = is_signed;
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
    // The high bits of x' (u, or ~u for negative x and a signed codebook;
    // an unsigned one's negative buckets have no threshold, thr = kLow, so
    // E + u never carries and their low bits need no flip).
    const uint32_t high = neg && is_signed ? ~h & 0xFFFFu : h;
    table_[h] = (c << 16) + (kLow - thr) - (high << 16);
  }
}

BlockCodebook::Table BlockCodebook::table() const {
  return {table_.data(), flip_};
}

int BlockCodebook::quantize_table(float x) const {
  uint32_t u = std::bit_cast<uint32_t>(x);
  const uint32_t e = table_[u >> 16];
  if (flip_ && (u >> 31)) u = ~u;
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
#ifdef KBIT_BLOCKWISE_AVX512
    if (const AffineCodes* aff = cb.affine(); aff && affine_on()) {
      NoAction none;
      i = requantize_affine<8, -1, true>(*aff, t, x, one, idx, 0, n, none);
    }
#endif
    for (; i + Simd::kQ <= n; i += Simd::kQ) {
      Simd::quantize<8, -1>(t, x + i, one, idx + i);
    }
  }
#endif
  for (; i < n; ++i) idx[i] = uint8_t(cb.quantize_index(x[i]));
}

}  // namespace kbit::cpu
