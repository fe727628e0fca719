// Blockwise quantization on the CPU: exact nearest-code search, per-block
// primitives (inline, for fused kernels such as the 8-bit optimizers) and
// whole-tensor entry points (OpenMP over blocks).
//
// n values, block_size B, nb = ceil(n / B) blocks; x (n), absmax (nb),
// codes (n) bytes, or ceil(n / 2) bytes when packed (two 4-bit codes per
// byte, the first in the high nibble). Block j covers x[j*B, min(n, (j+1)*B))
// and the last block may be partial. A value is normalized as
// v = x * (1 / absmax) (the inverse is one f32 division per block; 0 when
// absmax < FLT_MIN) and its code is the index of the nearest code value.
//
// Exact search. Tie rule: a value exactly half way between two codes takes
// the upper (larger) code. Threshold t[i] is the least float that goes to
// code i + 1 under that rule, computed exactly (codebook side); the code of
// v is then #{i : v >= t[i]}. To count fast, floats are split into 2^16
// buckets by their top 16 bits (sign, exponent, 7 mantissa bits):
// bucket_base[b] counts the thresholds at or below the bucket's smallest
// value and at most `probes` thresholds lie inside any bucket, so
//   code(v) = bucket_base[b] + #{j < probes : v >= t[bucket_base[b] + j]},
// which is exact (the table only saves the first comparisons). NaN takes
// code 0 (+inf the last code, -inf the first); NaNs are skipped by absmax.
// The reference argmin in kernels/ref/quantize.h gives the same codes.
//
// Stochastic rounding: v between codes c[lo] <= v < c[lo + 1] takes
// lo + 1 with probability p = (v - c[lo]) / (c[lo + 1] - c[lo]): the code
// is lo + (u < p) with u = uniform word (offset + i) of Philox(seed), i the
// element's index in the tensor; values outside [c[0], c[n-1]] clamp.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/dtype.h"
#include "core/philox.h"

#if defined(__AVX2__)
// GCC 12's AVX-512 headers start gathers and widenings from
// _mm512_undefined_*() values, which -Wall reports as maybe uninitialized
// at every inlined use; silenced for the lines of those headers only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace kbit::cpu {

constexpr int kBucketShift = 16;  // a float's bucket is bits >> 16
constexpr int kNumBuckets = 1 << (32 - kBucketShift);
// Bytes readable past the bucket table (4-byte gathers at byte offsets).
constexpr int kBucketPad = 4;

// Counts the sorted thresholds t at or below a float, exactly.
//
// When no bucket holds more than one threshold (probes <= 1, true of every
// named codebook), `fused` replaces both tables with one 32-bit entry per
// bucket: base | key << 8, where key is the least 16-bit key of the
// bucket's floats that is >= the threshold inside it (0x10000: none). A
// float's key is its low 16 bits, inverted for negative floats so that keys
// grow with the value. Then count(v) = base + (key(v) >= key).
struct SortedSearch {
  const float* thresholds = nullptr;     // (count + probes), NaN padded
  const uint8_t* bucket_base = nullptr;  // (kNumBuckets + kBucketPad)
  const uint32_t* fused = nullptr;       // (kNumBuckets) or null
  int count = 0;                         // number of real thresholds
  int probes = 0;                        // most thresholds in one bucket
};

// The 16-bit key of a float within its bucket (grows with the value).
inline uint32_t bucket_key(uint32_t bits) {
  uint32_t flip = uint32_t(int32_t(bits) >> 31) & 0xffffu;
  return (bits ^ flip) & 0xffffu;
}

// Everything a kernel needs about one codebook (owned by quant::Codebook).
struct CodeSearch {
  const float* codes = nullptr;  // (256), sorted; padded with the last code
  int n = 0;                     // number of codes, 2..256
  bool packed = false;           // n <= 16: two codes per byte
  SortedSearch nearest;          // thresholds: midpoints (tie rule above)
  SortedSearch floor;            // thresholds: codes[1..n-1]
};

// Settings of stochastic rounding for one call.
struct Stochastic {
  uint64_t seed = 0;
  uint64_t offset = 0;  // word of the Philox stream used by element 0
};

// The layout of one block of codes: BlockSize values, stored as one byte
// each (Bits > 4) or two per byte (Bits <= 4), with one f32 absmax kept in
// a separate array (structure of arrays, so code streams stay contiguous).
template <int64_t BlockSize, int Bits>
struct BlockLayout {
  static_assert(BlockSize >= 32 && BlockSize <= 4096 &&
                    (BlockSize & (BlockSize - 1)) == 0,
                "block sizes are powers of two in 32..4096");
  static_assert(Bits >= 2 && Bits <= 8, "codes have 2..8 bits");
  static constexpr int64_t block_size = BlockSize;
  static constexpr int bits = Bits;
  static constexpr int64_t code_bytes = Bits <= 4 ? BlockSize / 2 : BlockSize;
  static constexpr int64_t absmax_bytes = 4;
};
// bitsandbytes' 8-bit optimizer states (256 codes per absmax) and the
// 4-bit default of quantize_4bit (64 per absmax).
using Block8x256 = BlockLayout<256, 8>;
using Block4x64 = BlockLayout<64, 4>;
static_assert(Block8x256::code_bytes + Block8x256::absmax_bytes == 260,
              "2.03 bytes per value for two 8-bit states");
static_assert(Block4x64::code_bytes == 32, "two 4-bit codes per byte");

inline int64_t num_blocks(int64_t n, int64_t block_size) {
  return (n + block_size - 1) / block_size;
}
inline int64_t code_bytes(int64_t n, bool packed) {
  return packed ? (n + 1) / 2 : n;
}

// ---- scalar primitives ----

inline uint32_t float_bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}

// #{thresholds <= v}; NaN gives 0.
inline int count_at_or_below(const SortedSearch& s, float v) {
  uint32_t u = float_bits(v);
  if (s.fused) {
    uint32_t e = s.fused[u >> kBucketShift];
    int c = int(e & 0xffu) + (bucket_key(u) >= (e >> 8));
    return v == v ? c : 0;
  }
  int base = s.bucket_base[u >> kBucketShift];
  int c = base;
  for (int j = 0; j < s.probes; ++j) c += v >= s.thresholds[base + j];
  return v == v ? c : 0;
}

// Exact nearest code of a normalized value.
inline int nearest_code(const CodeSearch& s, float v) {
  return count_at_or_below(s.nearest, v);
}

// Stochastic code of a normalized value given a uniform u in [0, 1).
inline int stochastic_code(const CodeSearch& s, float v, float u) {
  int lo = count_at_or_below(s.floor, v);
  float p =
      (v - s.codes[lo]) / (s.codes[lo + 1 < s.n ? lo + 1 : lo] - s.codes[lo]);
  int c = lo + (u < p);
  return c < s.n ? c : s.n - 1;
}

// Inverse of a block's absmax; 0 when absmax < FLT_MIN (an all-zero or
// all-subnormal block then quantizes as zeros).
inline float inverse_absmax(float absmax) {
  return absmax >= FLT_MIN ? 1.f / absmax : 0.f;
}

// Uniforms u[k] for Philox words first_word + k, k < n (n <= 8 here).
inline void philox_uniforms(uint64_t seed, uint64_t first_word, int n,
                            float* u) {
  const std::array<uint32_t, 2> key = {uint32_t(seed), uint32_t(seed >> 32)};
  int k = 0;
  while (k < n) {
    uint64_t w = first_word + uint64_t(k);
    uint64_t blk = w / 4;
    PhiloxBlock r = philox4x32({uint32_t(blk), uint32_t(blk >> 32), 0, 0}, key);
    for (uint64_t lane = w % 4; lane < 4 && k < n; ++lane, ++k)
      u[k] = uint_to_unit_float(r[lane]);
  }
}

inline float to_f32(float x) {
  return x;
}
inline float to_f32(bf16_t x) {
  return bf16_to_f32(x);
}
inline float to_f32(f16_t x) {
  return f16_to_f32(x);
}

// ---- AVX2 primitives (8 values at a time) ----
#if defined(__AVX2__)

inline __m256 load8(const float* x) {
  return _mm256_loadu_ps(x);
}
inline __m256 load8(const bf16_t* x) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline __m256 load8(const f16_t* x) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x)));
}

// #{thresholds <= v} for 8 values (int32 lanes); NaN lanes give 0.
inline __m256i count_at_or_below8(const SortedSearch& s, __m256 v) {
  if (s.fused) {  // one gather: base + (key(v) >= key)
    // NaN lanes become -inf (max_ps returns its second operand for a NaN
    // first one), whose count is 0.
    v = _mm256_max_ps(v, _mm256_set1_ps(-INFINITY));
    __m256i u = _mm256_castps_si256(v);
    __m256i bucket = _mm256_srli_epi32(u, kBucketShift);
    const __m256i low = _mm256_set1_epi32(0xffff);
    __m256i e = _mm256_i32gather_epi32(reinterpret_cast<const int*>(s.fused),
                                       bucket, 4);
    __m256i flip = _mm256_and_si256(_mm256_srai_epi32(u, 31), low);
    __m256i key = _mm256_and_si256(_mm256_xor_si256(u, flip), low);
    __m256i below = _mm256_cmpgt_epi32(_mm256_srli_epi32(e, 8), key);
    __m256i c = _mm256_add_epi32(
        _mm256_and_si256(e, _mm256_set1_epi32(0xff)),
        _mm256_add_epi32(_mm256_set1_epi32(1), below));  // below lanes: -1
    return c;
  }
  __m256i u = _mm256_castps_si256(v);
  __m256i bucket = _mm256_srli_epi32(u, kBucketShift);
  __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
  __m256i base = _mm256_i32gather_epi32(
      reinterpret_cast<const int*>(s.bucket_base), bucket, 1);
  base = _mm256_and_si256(base, _mm256_set1_epi32(0xff));
  __m256i c = base;
  for (int j = 0; j < s.probes; ++j) {
    __m256 t = _mm256_i32gather_ps(s.thresholds + j, base, 4);
    __m256 ge = _mm256_cmp_ps(v, t, _CMP_GE_OQ);
    c = _mm256_sub_epi32(c, _mm256_castps_si256(ge));  // ge lanes are -1
  }
  return _mm256_andnot_si256(_mm256_castps_si256(nan), c);
}

inline __m256i nearest_code8(const CodeSearch& s, __m256 v) {
  return count_at_or_below8(s.nearest, v);
}

inline __m256i stochastic_code8(const CodeSearch& s, __m256 v, __m256 u) {
  __m256i lo = count_at_or_below8(s.floor, v);
  __m256i top = _mm256_set1_epi32(s.n - 1);
  __m256i hi =
      _mm256_min_epi32(_mm256_add_epi32(lo, _mm256_set1_epi32(1)), top);
  __m256 clo = _mm256_i32gather_ps(s.codes, lo, 4);
  __m256 chi = _mm256_i32gather_ps(s.codes, hi, 4);
  __m256 p = _mm256_div_ps(_mm256_sub_ps(v, clo), _mm256_sub_ps(chi, clo));
  __m256 up = _mm256_cmp_ps(u, p, _CMP_LT_OQ);
  __m256i c = _mm256_sub_epi32(lo, _mm256_castps_si256(up));
  return _mm256_min_epi32(c, top);
}

// The low byte of each of 8 int32 lanes, as 8 bytes.
inline uint64_t low_bytes8(__m256i c) {
  const __m256i pick = _mm256_setr_epi8(
      0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,  //
      0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  __m256i b = _mm256_shuffle_epi8(c, pick);
  __m128i lo = _mm256_castsi256_si128(b);
  __m128i hi = _mm256_extracti128_si256(b, 1);
  return uint64_t(_mm_cvtsi128_si64(_mm_unpacklo_epi32(lo, hi)));
}

// 8 codes < 16 packed into 4 bytes, even index in the high nibble.
inline uint32_t pack_nibbles8(__m256i c) {
  __m256i pair =
      _mm256_or_si256(_mm256_slli_epi32(c, 4), _mm256_srli_epi64(c, 32));
  const __m256i pick = _mm256_setr_epi8(
      0, 8, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,  //
      0, 8, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  __m256i b = _mm256_shuffle_epi8(pair, pick);
  uint32_t lo = uint32_t(_mm_cvtsi128_si32(_mm256_castsi256_si128(b)));
  uint32_t hi = uint32_t(_mm_cvtsi128_si32(_mm256_extracti128_si256(b, 1)));
  return (lo & 0xffffu) | (hi << 16);
}

// The absmax of 8 lanes, NaN lanes skipped.
inline __m256 abs8(__m256 v) {
  return _mm256_andnot_ps(_mm256_set1_ps(-0.f), v);
}
inline float hmax8(__m256 m) {
  __m128 r = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  r = _mm_max_ps(r, _mm_movehl_ps(r, r));
  r = _mm_max_ss(r, _mm_shuffle_ps(r, r, 1));
  return _mm_cvtss_f32(r);
}

// 32 nearest codes of x[0, 32) * inv as 32 bytes, in order.
template <typename T>
inline __m256i nearest_codes32(const CodeSearch& s, const T* x, __m256 inv) {
  __m256i c0 = nearest_code8(s, _mm256_mul_ps(load8(x), inv));
  __m256i c1 = nearest_code8(s, _mm256_mul_ps(load8(x + 8), inv));
  __m256i c2 = nearest_code8(s, _mm256_mul_ps(load8(x + 16), inv));
  __m256i c3 = nearest_code8(s, _mm256_mul_ps(load8(x + 24), inv));
  __m256i b = _mm256_packus_epi16(_mm256_packs_epi32(c0, c1),
                                  _mm256_packs_epi32(c2, c3));
  return _mm256_permutevar8x32_epi32(b,
                                     _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// 32 code bytes (< 16) packed into 16 bytes, even index in the high nibble.
inline __m128i pack_nibbles32(__m256i b) {
  __m256i m = _mm256_maddubs_epi16(b, _mm256_set1_epi16(0x0110));  // 16a + b
  __m256i p = _mm256_packus_epi16(m, m);
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(p, 0x08));
}

#endif  // __AVX2__

// ---- per-block primitives ----

// max |x[i]| over n values (NaN skipped; 0 for n == 0).
template <typename T>
inline float block_absmax(const T* x, int64_t n) {
  float m = 0.f;
  int64_t i = 0;
#if defined(__AVX2__)
  __m256 acc = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) acc = _mm256_max_ps(abs8(load8(x + i)), acc);
  m = hmax8(acc);
#endif
  for (; i < n; ++i) {
    float a = to_f32(x[i]);
    a = a < 0.f ? -a : a;
    m = a > m ? a : m;
  }
  return m;
}

// Codes of x[0, n) scaled by inv, one byte each (codebooks of any size).
template <typename T>
inline void quantize_block(const CodeSearch& s, const T* x, int64_t n,
                           float inv, uint8_t* codes) {
  int64_t i = 0;
#if defined(__AVX2__)
  const __m256 vinv = _mm256_set1_ps(inv);
  for (; i + 32 <= n; i += 32) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + i),
                        nearest_codes32(s, x + i, vinv));
  }
  for (; i + 8 <= n; i += 8) {
    __m256i c = nearest_code8(s, _mm256_mul_ps(load8(x + i), vinv));
    uint64_t b = low_bytes8(c);
    std::memcpy(codes + i, &b, 8);
  }
#endif
  for (; i < n; ++i) codes[i] = uint8_t(nearest_code(s, to_f32(x[i]) * inv));
}

// Codes of x[0, n) packed two per byte into ceil(n / 2) bytes (n <= 16
// codes); a last odd code leaves the low nibble 0.
template <typename T>
inline void quantize_block_packed(const CodeSearch& s, const T* x, int64_t n,
                                  float inv, uint8_t* packed) {
  int64_t i = 0;
#if defined(__AVX2__)
  const __m256 vinv = _mm256_set1_ps(inv);
  for (; i + 32 <= n; i += 32) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(packed + i / 2),
                     pack_nibbles32(nearest_codes32(s, x + i, vinv)));
  }
  for (; i + 8 <= n; i += 8) {
    uint32_t b =
        pack_nibbles8(nearest_code8(s, _mm256_mul_ps(load8(x + i), vinv)));
    std::memcpy(packed + i / 2, &b, 4);
  }
#endif
  for (; i < n; i += 2) {
    int hi = nearest_code(s, to_f32(x[i]) * inv);
    int lo = i + 1 < n ? nearest_code(s, to_f32(x[i + 1]) * inv) : 0;
    packed[i / 2] = uint8_t(hi << 4 | lo);
  }
}

// Stochastic codes of x[0, n), one byte each or packed; element k draws
// Philox word first_word + k.
template <typename T>
inline void quantize_block_stochastic(const CodeSearch& s, const T* x,
                                      int64_t n, float inv, uint64_t seed,
                                      uint64_t first_word, uint8_t* out) {
  alignas(32) float u[8];
  for (int64_t i = 0; i < n; i += 8) {
    int m = int(n - i < 8 ? n - i : 8);
    philox_uniforms(seed, first_word + uint64_t(i), m, u);
    uint8_t c[8] = {0, 0, 0, 0, 0, 0, 0, 0};
#if defined(__AVX2__)
    if (m == 8) {
      __m256 v = _mm256_mul_ps(load8(x + i), _mm256_set1_ps(inv));
      uint64_t b = low_bytes8(stochastic_code8(s, v, _mm256_load_ps(u)));
      std::memcpy(c, &b, 8);
    } else
#endif
      for (int k = 0; k < m; ++k)
        c[k] = uint8_t(stochastic_code(s, to_f32(x[i + k]) * inv, u[k]));
    if (!s.packed) {
      std::memcpy(out + i, c, size_t(m));
    } else {
      for (int k = 0; k < m; k += 2)
        out[(i + k) / 2] = uint8_t(c[k] << 4 | (k + 1 < m ? c[k + 1] : 0));
    }
  }
}

#if defined(__AVX2__)
// Stores 8 floats; Stream: non-temporal (out 32-byte aligned), for outputs
// far larger than the caches, so that no line is read before it is written.
template <bool Stream>
inline void store8(float* out, __m256 v) {
  if constexpr (Stream) {
    _mm256_stream_ps(out, v);
  } else {
    _mm256_storeu_ps(out, v);
  }
}
#endif

// out[i] = codes_table[codes[i]] * absmax for n one-byte codes.
template <bool Stream = false>
inline void dequantize_block(const CodeSearch& s, const uint8_t* codes,
                             int64_t n, float absmax, float* out) {
  int64_t i = 0;
#if defined(__AVX512F__)
  // 16 values a step: one gather, and a streaming store fills a whole
  // 64-byte line at once (0.52-0.57x of triad with 32-byte stores, measured).
  const __m512 va16 = _mm512_set1_ps(absmax);
  const bool stream16 = Stream && reinterpret_cast<uintptr_t>(out) % 64 == 0;
  for (; i + 16 <= n; i += 16) {
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + i));
    __m512 c = _mm512_mul_ps(
        _mm512_i32gather_ps(_mm512_cvtepu8_epi32(b), s.codes, 4), va16);
    if (stream16) {
      _mm512_stream_ps(out + i, c);
    } else {
      _mm512_storeu_ps(out + i, c);
    }
  }
#endif
#if defined(__AVX2__)
  const __m256 va = _mm256_set1_ps(absmax);
  for (; i + 8 <= n; i += 8) {
    __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + i));
    __m256 c = _mm256_i32gather_ps(s.codes, _mm256_cvtepu8_epi32(b), 4);
    store8<Stream>(out + i, _mm256_mul_ps(c, va));
  }
#endif
  for (; i < n; ++i) out[i] = s.codes[codes[i]] * absmax;
}

// The same for n packed 4-bit codes in ceil(n / 2) bytes.
template <bool Stream = false>
inline void dequantize_block_packed(const CodeSearch& s, const uint8_t* packed,
                                    int64_t n, float absmax, float* out) {
  int64_t i = 0;
#if defined(__AVX2__)
  const __m256 va = _mm256_set1_ps(absmax);
  const __m256 tab_lo = _mm256_loadu_ps(s.codes);
  const __m256 tab_hi = _mm256_loadu_ps(s.codes + 8);
  const __m128i dup =
      _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m256i shift = _mm256_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0);
  for (; i + 8 <= n; i += 8) {
    uint32_t w;
    std::memcpy(&w, packed + i / 2, 4);
    __m128i b = _mm_shuffle_epi8(_mm_cvtsi32_si128(int(w)), dup);
    __m256i q =
        _mm256_and_si256(_mm256_srlv_epi32(_mm256_cvtepu8_epi32(b), shift),
                         _mm256_set1_epi32(15));
    __m256 lo = _mm256_permutevar8x32_ps(tab_lo, q);
    __m256 hi = _mm256_permutevar8x32_ps(tab_hi, q);
    __m256 sel = _mm256_castsi256_ps(_mm256_slli_epi32(q, 28));  // bit 3
    store8<Stream>(out + i, _mm256_mul_ps(_mm256_blendv_ps(lo, hi, sel), va));
  }
#endif
  for (; i < n; ++i) {
    uint8_t b = packed[i / 2];
    out[i] = s.codes[i % 2 == 0 ? b >> 4 : b & 15] * absmax;
  }
}

// ---- whole-tensor entry points (OpenMP over blocks above 2^15 values) ----

// block_size >= 1; a block_size >= n makes one whole-tensor block. The code
// layout follows s.packed. stochastic == nullptr: nearest code.
void quantize_blockwise(const CodeSearch& s, const float* x, int64_t n,
                        int64_t block_size, float* absmax, uint8_t* codes,
                        const Stochastic* stochastic = nullptr);
void quantize_blockwise(const CodeSearch& s, const bf16_t* x, int64_t n,
                        int64_t block_size, float* absmax, uint8_t* codes,
                        const Stochastic* stochastic = nullptr);
void quantize_blockwise(const CodeSearch& s, const f16_t* x, int64_t n,
                        int64_t block_size, float* absmax, uint8_t* codes,
                        const Stochastic* stochastic = nullptr);

void dequantize_blockwise(const CodeSearch& s, const uint8_t* codes,
                          const float* absmax, int64_t n, int64_t block_size,
                          float* out);

}  // namespace kbit::cpu
