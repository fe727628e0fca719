// Reference for kernels/cpu/optim_blockwise.h: the same fused blockwise step
// written as plain per-element loops, with the nearest code found by a full
// argmin over the codebook. The oracle of the fast kernel: same arguments,
// same rule formulas (see the table in the cpu header), same results bit for
// bit.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/cpu/optim_blockwise.h"

namespace kbit::ref {

// argmin_i |x - code[i]| in f64 (exact for neighbouring codes), the highest
// index on ties.
inline int nearest_code(const float* code, int size, float x) {
  int best = 0;
  double best_d = std::fabs(double(x) - double(code[0]));
  for (int i = 1; i < size; ++i) {
    const double d = std::fabs(double(x) - double(code[i]));
    if (d <= best_d) {
      best = i;
      best_d = d;
    }
  }
  return best;
}

// A decoded state keeps the sign bit of the state.
inline int sign_fix(const float* code, int size, float x, int idx) {
  const bool mixed = code[0] < 0.0f && code[size - 1] >= 0.0f;
  if (!mixed) return idx;
  if (std::signbit(x) && code[idx] >= 0.0f) return idx - 1;
  if (!std::signbit(x) && code[idx] < 0.0f) return idx + 1;
  return idx;
}

inline int get_code(const uint8_t* codes, int bits, int64_t i) {
  if (bits == 8) return codes[i];
  return (codes[i / 2] >> (i % 2 ? 0 : 4)) & 0xF;  // even: high nibble
}

inline void set_code(uint8_t* codes, int bits, int64_t i, int q) {
  if (bits == 8) {
    codes[i] = uint8_t(q);
  } else if (i % 2 == 0) {
    codes[i / 2] = uint8_t(q << 4);
  } else {
    codes[i / 2] = uint8_t(codes[i / 2] | q);
  }
}

// The update of one element: new p, states s1/s2, and the unscaled update u
// (LAMB, LARS; 0 otherwise).
inline float rule_element(cpu::BlockwiseRule rule,
                          const cpu::BlockwiseScalars& k, float p, float g,
                          float& s1, float& s2, float& u) {
  using R = cpu::BlockwiseRule;
  u = 0.0f;
  const float gd = k.wd != 0.0f ? std::fma(k.wd, p, g) : g;  // g' (header)
  switch (rule) {
    case R::momentum:
      s1 = std::fma(k.mu, s1, gd);
      return std::fma(k.neg_lr, s1, p);
    case R::nesterov:
      s1 = std::fma(k.mu, s1, gd);
      return std::fma(k.neg_lr, std::fma(k.mu, s1, gd), p);
    case R::lars:
      s1 = std::fma(k.mu, s1, gd);
      u = s1;
      return std::fma(k.neg_lr_scale, u, p);
    case R::rmsprop:
      s1 = std::fma(k.b1, s1, k.omb1 * (gd * gd));
      return std::fma(k.neg_lr, gd / (std::sqrt(s1) + k.eps), p);
    case R::adagrad:
      s1 = std::fma(gd, gd, s1);
      return std::fma(k.neg_lr, gd / (std::sqrt(s1) + k.eps), p);
    case R::lion: {
      const float q = std::fma(k.neg_decay, p, p);
      const float x = std::fma(k.b1, s1, k.omb1 * g);
      const float d = x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f);
      s1 = std::fma(k.b2, s1, k.omb2 * g);
      return std::fma(k.neg_lr, d, q);
    }
    case R::adam: {
      s1 = std::fma(k.b1, s1, k.omb1 * gd);
      s2 = std::fma(k.b2, s2, k.omb2 * (gd * gd));
      const float den = std::fma(std::sqrt(s2), k.inv_sqrt_c2, k.eps);
      return std::fma(k.neg_step, s1 / den, std::fma(k.neg_decay, p, p));
    }
    case R::lamb: {
      s1 = std::fma(k.b1, s1, k.omb1 * g);
      s2 = std::fma(k.b2, s2, k.omb2 * (g * g));
      const float den = std::fma(std::sqrt(s2), k.inv_sqrt_c2, k.eps);
      u = std::fma(k.lamb_wd, p, k.inv_c1 * (s1 / den));
      return std::fma(k.neg_lr_scale, u, p);
    }
  }
  return p;
}

// Requantizes one block's new states into codes/absmax.
inline void requantize_block(const cpu::QuantState& s, int bits, int64_t begin,
                             int64_t blk, const std::vector<float>& x) {
  float amax = 0.0f;
  for (float v : x) amax = std::max(amax, std::fabs(v));
  s.absmax[blk] = amax;
  const float inv = amax >= FLT_MIN ? 1.0f / amax : 0.0f;
  const float* code = s.codebook->values();
  const int size = s.codebook->size();
  for (size_t i = 0; i < x.size(); ++i) {
    const float xn = x[i] * inv;
    const int q = sign_fix(code, size, xn, nearest_code(code, size, xn));
    set_code(s.codes, bits, begin + int64_t(i), q);
  }
}

// The reference step; with norms != nullptr, the first pass of LAMB/LARS
// instead (writes nothing, accumulates sum u^2 and sum p^2 in f64).
inline void blockwise_step(cpu::BlockwiseRule rule,
                           const cpu::BlockwiseHyper& h,
                           const cpu::BlockwiseArgs& a,
                           cpu::BlockwiseNorms* norms = nullptr) {
  cpu::check_blockwise_args(rule, a);
  const cpu::BlockwiseScalars k = cpu::blockwise_scalars(rule, h);
  const bool two = cpu::blockwise_num_states(rule) == 2;
  for (int64_t begin = 0, blk = 0; begin < a.n; begin += a.block_size, ++blk) {
    const int64_t len = std::min(a.block_size, a.n - begin);
    std::vector<float> s1(len), s2(len);
    for (int64_t i = 0; i < len; ++i) {
      const int64_t e = begin + i;
      float m = a.s1.codebook->values()[get_code(a.s1.codes, a.bits, e)] *
                a.s1.absmax[blk];
      float v = 0.0f;
      if (two) {
        v = a.s2.codebook->values()[get_code(a.s2.codes, a.bits, e)] *
            a.s2.absmax[blk];
      }
      float u = 0.0f;
      const float p = rule_element(rule, k, a.p[e], a.g[e], m, v, u);
      if (norms) {
        norms->update_sq += double(u) * u;
        norms->param_sq += double(a.p[e]) * a.p[e];
      } else {
        a.p[e] = p;
      }
      s1[i] = m;
      s2[i] = v;
    }
    if (norms) continue;
    requantize_block(a.s1, a.bits, begin, blk, s1);
    if (two) requantize_block(a.s2, a.bits, begin, blk, s2);
  }
}

}  // namespace kbit::ref
