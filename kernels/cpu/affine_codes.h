// Exact nearest-code search without table gathers: a piecewise-affine map
// from |x| to a fixed-point code, with the few values it cannot place
// flagged for the exact table path.
//
// Why: requantization looks up one table entry per state element. On Zen 4
// a 16-lane AVX-512 gather costs about 20 cycles whatever its mask, so two
// states cost ~2.5 cycles per parameter in gathers alone, more than the
// whole 32-bit AdamW step. Codebooks built from even grids (dynamic,
// udynamic, their k-bit forms, linear maps) have midpoints that lie on a
// few straight lines, which four one-register permutes can evaluate.
//
// The map, for a = |x| with its bits clamped to [2^-29, 2 - 2^-23] (so
// NaN and Inf take the top of the range, as the bucket table does):
//   e  = segment of a, 1..15: two binades each, 2^(2e - 31) .. 2^(2e - 29)
//        (bits 24..27 of a), so a table is one register (vpermps)
//   j  = (e + (a >= split[e])) % 16   the piece: segment e below its split
//                                     point, or segment e + 1's line above
//                                     (0: above the top segment's split)
//   c32 = (int32) min(fma(a, slope[j], offset[j]), clamp[j])
// c32 is a fixed-point code: code = c32 >> 16, and the line of a piece
// crosses k * 65536 + delta exactly where the code steps to k. A lane whose
// low 16 bits are below 2 delta (flag_mask test) lies within delta of a
// step, where float rounding could put it on the wrong side: such lanes go
// to the exact path (BlockCodebook::quantize_index). clamp caps a piece
// whose last code spans two grid steps (the end of a decade).
//
// Signed codebooks (mirror): a negative x takes
//   min(sat_sub(mirror_k, code of |x|), mirror_max)
// which is exact for maps whose negative side mirrors the positive one
// (dynamic: -x is code 2z - code(x); the zero code goes to z - 1, the sign
// fix; the top code 1.0, which has no mirror, goes to 0). Where a split
// point is itself a float midpoint, +a steps up at a but -a only one float
// later (the tie goes to the upper code), and no line crosses a split:
// such maps (flag_splits) also flag a == split[e]. Unsigned codebooks give
// a negative x the argument 2^-29, whose code is 0, as the table does.
//
// The optimizer's kernels skip the upper clamp: there x = state / absmax,
// so |x| < 2 or x is not finite, and a non-finite x gives the top code of
// its sign or a flag either way (NaN: a NaN line; Inf: the top piece).
//
// build_affine_codes fits the pieces and then proves the map: it walks
// every interval on which the exact code is constant (both signs, all 15
// segments and the clamped ends) and checks that every value the map can
// produce there is either the exact code or flagged. The check evaluates
// the same float operations as the kernels (affine_c32 below), so a
// codebook either gets a map that is exact for every float, or none.
#pragma once

#include <bit>
#include <cstdint>
#include <memory>

namespace kbit::cpu {

inline constexpr int kAffinePieces = 16;
inline constexpr int kAffineSegmentShift = 24;  // bits of a above a segment
// |x| bits are clamped to [2^-29, the float below 2] before the map.
inline constexpr uint32_t kAffineLoBits = 0x31000000u;
inline constexpr uint32_t kAffineHiBits = 0x3FFFFFFFu;
// The fixed-point scale: c32 = code * 65536 + fraction.
inline constexpr int kAffineFracBits = 16;

struct AffineCodes {
  alignas(64) float split[kAffinePieces];   // split[0] unused
  alignas(64) float slope[kAffinePieces];   // >= 0, code units * 65536
  alignas(64) float offset[kAffinePieces];  // includes + delta
  alignas(64) float clamp[kAffinePieces];
  uint32_t flag_mask = 0;    // (c32 & flag_mask) == 0: near a step, flagged
  bool mirror = false;       // signed codebook (see the file comment)
  bool flag_splits = false;  // mirror only: flag a == split[e]
  uint8_t mirror_k = 0, mirror_max = 0;
  int delta = 0;  // half the flagged band, in c32 units
};

// |x| bits clamped to the map's range, as a float.
inline float affine_arg(uint32_t ua) {
  ua = ua < kAffineLoBits ? kAffineLoBits : ua;
  ua = ua > kAffineHiBits ? kAffineHiBits : ua;
  return std::bit_cast<float>(ua);
}
// The segment of a clamped argument: its split point is t.split[this].
inline uint32_t affine_segment(float a) {
  return (std::bit_cast<uint32_t>(a) >> kAffineSegmentShift) &
         (kAffinePieces - 1);
}

// The fixed-point code of a = |x| (ua: its bits, sign clear), as the
// vector kernels compute it.
inline int32_t affine_c32(const AffineCodes& t, uint32_t ua) {
  const float a = affine_arg(ua);
  const uint32_t e = affine_segment(a);
  const uint32_t j = (e + (a >= t.split[e] ? 1u : 0u)) & (kAffinePieces - 1);
  const float v = __builtin_fmaf(a, t.slope[j], t.offset[j]);
  return int32_t(v < t.clamp[j] ? v : t.clamp[j]);
}

// The code of -|x| from k, the code of |x| (mirrored maps).
inline int affine_mirror(const AffineCodes& t, int k) {
  const int m = t.mirror_k > k ? t.mirror_k - k : 0;
  return m < t.mirror_max ? m : t.mirror_max;
}

// The code of x, or -1 where the map flags it (the exact path decides).
inline int affine_code(const AffineCodes& t, float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const bool neg = (u >> 31) != 0;
  const uint32_t ua = t.mirror ? u & 0x7FFFFFFFu : neg ? 0u : u;
  const float a = affine_arg(ua);
  if (t.flag_splits && a == t.split[affine_segment(a)]) return -1;
  const int32_t c = affine_c32(t, ua);
  if ((uint32_t(c) & t.flag_mask) == 0) return -1;
  const int k = (c >> kAffineFracBits) & 0xFF;
  return neg ? affine_mirror(t, k) : k;
}

// The proven map of a codebook, or null when its midpoints do not fit
// (then the bucket table or the binary search serves it). values: (K)
// sorted ascending; mid_up: (K - 1) midpoints rounded up to f32; z: index
// of the first code >= 0; sign_fix: codes of both signs (see
// BlockCodebook).
std::unique_ptr<AffineCodes> build_affine_codes(const float* values,
                                                const float* mid_up, int size,
                                                int z, bool sign_fix);

}  // namespace kbit::cpu
