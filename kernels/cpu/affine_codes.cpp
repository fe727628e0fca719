// Fitting and proving the piecewise-affine code map (affine_codes.h).
#include "kernels/cpu/affine_codes.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace kbit::cpu {
namespace {

constexpr double kScale = double(1 << kAffineFracBits);
constexpr int32_t kC32Limit = 256 << kAffineFracBits;  // codes 0..255
// Half-widths of the flagged band tried, in c32 units (1 / 65536 of a
// code). The narrowest that proves wins: a lane is flagged with probability
// about 2 delta / 65536.
constexpr int kDeltas[] = {4, 8, 16, 32, 64, 128};

float bits_to_float(uint32_t u) {
  return std::bit_cast<float>(u);
}
uint32_t float_bits(float x) {
  return std::bit_cast<uint32_t>(x);
}

// The exact code of x: the number of midpoints <= x, then the sign fix
// (BlockCodebook::quantize_index without its table).
struct Exact {
  const float* mid_up;
  int size, z;
  bool sign_fix;
  int operator()(float x) const {
    int i = int(std::upper_bound(mid_up, mid_up + size - 1, x) - mid_up);
    if (!sign_fix) return i;
    if (std::signbit(x) && i >= z) return i - 1;
    if (!std::signbit(x) && i < z) return i + 1;
    return i;
  }
};

// The codes the map can give on an interval [a0, a1] of |x| where it runs
// through c32 values [lo, hi] (monotone within one piece): true when every
// unflagged value there decodes to `want` (after `decode`).
template <class Decode>
bool codes_ok(const AffineCodes& t, int32_t lo, int32_t hi, int want,
              Decode decode) {
  if (lo < 0 || hi < lo || hi >= kC32Limit) return false;
  const int32_t band = 2 * t.delta;  // flagged: low 16 bits < band
  for (int32_t k = lo >> kAffineFracBits; k <= hi >> kAffineFracBits; ++k) {
    const int32_t base = k << kAffineFracBits;
    const int32_t from = std::max(lo, base + band);
    const int32_t to = std::min(hi, base + (1 << kAffineFracBits) - 1);
    if (from <= to && decode(int(k)) != want) return false;
  }
  return true;
}

class Builder {
 public:
  Builder(const float* values, const float* mid_up, int size, int z,
          bool sign_fix, int delta, bool flag_splits)
      : exact_{mid_up, size, z, sign_fix}, mid_(mid_up, mid_up + size - 1) {
    t_.delta = delta;
    t_.flag_mask = 0xFFFFu & ~uint32_t(2 * delta - 1);
    t_.mirror = values[0] < 0.0f;
    t_.flag_splits = flag_splits;
    if (t_.mirror) {
      // -x takes mirror_k - code(x): read it off the largest code below
      // the top; the proof checks every other value.
      const float a = values[size - 2];
      t_.mirror_k = uint8_t(exact_(a) + exact_(-a));
      t_.mirror_max = uint8_t(sign_fix ? z - 1 : size - 1);
    }
    std::fill(std::begin(t_.split), std::end(t_.split), INFINITY);
    std::fill(std::begin(t_.clamp), std::end(t_.clamp), INFINITY);
    for (float m : mid_) {
      // Where the code steps as |x| grows: at m for x >= 0, and just above
      // -m for x < 0 (-|x| >= m holds up to |x| = -m).
      if (m > 0.0f) steps_.push_back(m);
      if (m < 0.0f && t_.mirror) {
        steps_.push_back(std::nextafter(-m, INFINITY));
      }
    }
    std::sort(steps_.begin(), steps_.end());
    steps_.erase(std::unique(steps_.begin(), steps_.end()), steps_.end());
  }

  // Fits the pieces segment by segment; false when one does not prove.
  bool build() {
    if (!ends_ok()) return false;
    float start = bits_to_float(kAffineLoBits);
    for (int b = 1; b < kAffinePieces; ++b) {
      const float top = segment_top(b);
      if (fit(b, start, top)) {
        start = std::nextafter(top, INFINITY);
        continue;
      }
      // Split segment b at a step: its lower part ends piece b, its upper
      // part starts piece b + 1 (piece 0 above the top segment). The
      // highest split that proves.
      bool split = false;
      for (auto it = steps_.rbegin(); it != steps_.rend() && !split; ++it) {
        const float s = *it;
        if (s <= start || s > top) continue;
        t_.split[b] = s;
        split = fit(b, start, std::nextafter(s, 0.0f));
        if (split) start = s;
      }
      if (!split) {
        t_.split[b] = INFINITY;
        return false;
      }
      if (b == kAffinePieces - 1) return fit(0, start, top);
    }
    return true;
  }

  const AffineCodes& table() const { return t_; }

 private:
  // The largest float of segment b (1..15); of the clamped range for the
  // top one.
  static float segment_top(int b) {
    if (b == kAffinePieces - 1) return bits_to_float(kAffineHiBits);
    return bits_to_float(kAffineLoBits + (uint32_t(b) << kAffineSegmentShift) -
                         1u);
  }

  // The clamp to [2^-29, 2) changes no code: no midpoint has a magnitude
  // at or below 2^-29, or at or above the float below 2. Unsigned maps
  // give every negative x the code of 2^-29, which must be its code, 0.
  bool ends_ok() const {
    const float lo = bits_to_float(kAffineLoBits);
    const float hi = bits_to_float(kAffineHiBits);
    for (float m : mid_) {
      const float a = std::fabs(m);
      if (!(a > lo && a < hi)) return false;
    }
    return t_.mirror || (exact_(lo) == 0 && exact_(-hi) == 0);
  }

  // Piece j's line on [lo, hi] (the |x| it serves): candidates from the
  // steps inside, the first that proves.
  bool fit(int j, float lo, float hi) {
    std::vector<float> in;  // positive-side steps in (lo, hi]
    for (float m : mid_) {
      if (m > lo && m <= hi) in.push_back(m);
    }
    const int c0 = exact_(lo);
    const double d = t_.delta;
    struct Line {
      double slope, offset, clamp;
    };
    std::vector<Line> lines;
    const size_t n = in.size();
    if (n == 0) {
      lines.push_back({0.0, (c0 + 0.5) * kScale, INFINITY});
    } else if (n == 1) {
      // Any slope that keeps the ends within a code of the step.
      const double w = std::max(double(in[0]) - lo, double(hi) - in[0]);
      const double s = 0.5 * kScale / w;
      lines.push_back({s, (c0 + 1) * kScale + d - s * in[0], INFINITY});
    } else {
      // The even grid through the first and last step, free or capped at
      // the last code (a last code twice as wide, as at a decade's end).
      const double s = kScale * double(n - 1) / (double(in[n - 1]) - in[0]);
      const double off = (c0 + 1) * kScale + d - s * in[0];
      lines.push_back({s, off, INFINITY});
      lines.push_back({s, off, (c0 + double(n) + 0.5) * kScale});
    }
    for (const Line& l : lines) {
      t_.slope[j] = float(l.slope);
      t_.offset[j] = float(l.offset);
      t_.clamp[j] = float(l.clamp);
      if (proves(lo, hi)) return true;
    }
    return false;
  }

  // Every float |x| in [lo, hi] (one piece): the map gives the exact code
  // of +|x| and, when signed, of -|x|, or flags it.
  bool proves(float lo, float hi) const {
    std::vector<float> cuts = {lo};
    for (float s : steps_) {
      if (s > lo && s <= hi) cuts.push_back(s);
    }
    const auto mirror = [&](int k) { return affine_mirror(t_, k); };
    for (size_t i = 0; i < cuts.size(); ++i) {
      float a0 = cuts[i];
      const float a1 =
          i + 1 < cuts.size() ? std::nextafter(cuts[i + 1], 0.0f) : hi;
      // A split point itself may be flagged (see the header).
      if (t_.flag_splits && a0 == t_.split[affine_segment(a0)]) {
        a0 = std::nextafter(a0, INFINITY);
        if (a0 > a1) continue;
      }
      const int32_t c0 = affine_c32(t_, float_bits(a0));
      const int32_t c1 = affine_c32(t_, float_bits(a1));
      if (!codes_ok(t_, c0, c1, exact_(a0), [](int k) { return k; })) {
        return false;
      }
      if (t_.mirror && !codes_ok(t_, c0, c1, exact_(-a0), mirror)) {
        return false;
      }
    }
    return true;
  }

  Exact exact_;
  std::vector<float> mid_;    // (K - 1)
  std::vector<float> steps_;  // |x| where a code changes, ascending
  AffineCodes t_;
};

}  // namespace

std::unique_ptr<AffineCodes> build_affine_codes(const float* values,
                                                const float* mid_up, int size,
                                                int z, bool sign_fix) {
  if (size < 2) return nullptr;
  for (int i = 0; i + 1 < size - 1; ++i) {
    if (!(mid_up[i] < mid_up[i + 1])) return nullptr;  // repeated codes
  }
  // Signed maps must have a zero code to mirror around (the sign fix).
  if (values[0] < 0.0f && !sign_fix) return nullptr;
  const bool mirror = values[0] < 0.0f;
  for (int delta : kDeltas) {
    for (bool flag_splits : {false, true}) {
      if (flag_splits && !mirror) continue;
      Builder b(values, mid_up, size, z, sign_fix, delta, flag_splits);
      if (b.build()) return std::make_unique<AffineCodes>(b.table());
    }
  }
  return nullptr;
}

}  // namespace kbit::cpu
