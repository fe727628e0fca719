// Fused optimizer updates on the CPU: one pass reads p, g and the states,
// and writes p and the states back.
//
// The math of each update rule lives in one small "rule" struct with an
// inline apply() on one element: p, g and the rule's kStates state values
// (f32 registers). update_range() runs a rule over a raw element range, and
// fused_update() splits a whole tensor into chunks for OpenMP. A blockwise
// 8-bit state (a later issue) keeps the same rules: its driver dequantizes
// one block of states into f32, calls apply() per element, and requantizes.
// The plain oracles are in kernels/ref/optim_update.h.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/optim_blockwise.h"

namespace kbit::cpu {

// Hyperparameters of one Adam/AdamW update (all as the optimizer holds them).
struct AdamHyper {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool decoupled = true;  // true: AdamW; false: Adam with L2 decay
  int64_t step = 1;       // counts from 1 (bias correction)
};

// Adam / AdamW, 2 states (m, v), at step t:
//   g' = g + wd * p                         (L2 only, decoupled = false)
//   m  = beta1 * m + (1 - beta1) * g'
//   v  = beta2 * v + (1 - beta2) * g'^2
//   p  = p - lr * wd * p                    (decoupled only)
//        - lr / (1 - beta1^t) * m / (sqrt(v / (1 - beta2^t)) + eps)
// The denominator is computed as sqrt(v) / sqrt(1 - beta2^t) + eps.
struct AdamRule {
  static constexpr int kStates = 2;
  explicit AdamRule(const AdamHyper& h);

  void apply(float& p, float g, std::array<float, 2>& s) const {
    float gg = g + l2_ * p;
    float m = beta1_ * s[0] + one_minus_beta1_ * gg;
    float v = beta2_ * s[1] + one_minus_beta2_ * gg * gg;
    float denom = __builtin_sqrtf(v) * inv_sqrt_bc2_ + eps_;
    p = p - decay_ * p - step_size_ * m / denom;
    s[0] = m;
    s[1] = v;
  }

 private:
  float beta1_, beta2_, one_minus_beta1_, one_minus_beta2_, eps_;
  float l2_;            // wd for Adam, 0 for AdamW
  float decay_;         // lr * wd for AdamW, 0 for Adam
  float step_size_;     // lr / (1 - beta1^t)
  float inv_sqrt_bc2_;  // 1 / sqrt(1 - beta2^t)
};

// Hyperparameters of one SGD update.
struct SgdHyper {
  double lr = 1e-2;
  double momentum = 0.9;
  double weight_decay = 0.0;  // L2: added to the gradient
  bool nesterov = false;
};

// SGD with momentum, 1 state (the momentum buffer b, zero at the start):
//   g' = g + wd * p
//   b  = momentum * b + g'
//   p  = p - lr * (g' + momentum * b)       (Nesterov)
//   p  = p - lr * b                         (otherwise)
struct MomentumRule {
  static constexpr int kStates = 1;
  explicit MomentumRule(const SgdHyper& h);

  void apply(float& p, float g, std::array<float, 1>& s) const {
    float gg = g + wd_ * p;
    float b = momentum_ * s[0] + gg;
    float d = nesterov_ ? gg + momentum_ * b : b;
    p = p - lr_ * d;
    s[0] = b;
  }

 private:
  float lr_, momentum_, wd_;
  bool nesterov_;
};

// Plain SGD (momentum 0), no state: p = p - lr * (g + wd * p).
struct SgdRule {
  static constexpr int kStates = 0;
  explicit SgdRule(const SgdHyper& h);

  void apply(float& p, float g, std::array<float, 0>&) const {
    p = p - lr_ * (g + wd_ * p);
  }

 private:
  float lr_, wd_;
};

// Pointers to a rule's state arrays, one per state, each as long as p.
template <typename Rule>
using StatePtrs = std::array<float*, Rule::kStates>;

// Applies `rule` to elements [begin, end) of p (updated), g and the states
// (updated). Raw pointers, no checks: the callers check shapes.
template <typename Rule>
inline void update_range(const Rule& rule, float* __restrict p,
                         const float* __restrict g, const StatePtrs<Rule>& s,
                         int64_t begin, int64_t end) {
  constexpr int S = Rule::kStates;
  for (int64_t i = begin; i < end; ++i) {
    std::array<float, S> st;
    for (int k = 0; k < S; ++k) st[std::size_t(k)] = s[std::size_t(k)][i];
    rule.apply(p[i], g[i], st);
    for (int k = 0; k < S; ++k) s[std::size_t(k)][i] = st[std::size_t(k)];
  }
}

// Applies `rule` to all n elements, OpenMP over chunks above a size
// threshold. Instantiated for AdamRule, MomentumRule and SgdRule.
template <typename Rule>
void fused_update(const Rule& rule, float* p, const float* g,
                  const StatePtrs<Rule>& s, int64_t n);

// The entry points the optimizers call. p, g, m, v, b: n floats each.
void adam_update(const AdamHyper& h, float* p, const float* g, float* m,
                 float* v, int64_t n);
// b is the momentum buffer; it must be null exactly when momentum is 0.
void sgd_update(const SgdHyper& h, float* p, const float* g, float* b,
                int64_t n);

// ---- every blockwise rule on 32-bit states ----
// The rules of kernels/cpu/optim_blockwise.h (the same formulas, fma for
// fma, and the same BlockwiseScalars) on f32 state arrays: the 32-bit twin
// of blockwise_step, so a 32-bit and an 8-bit optimizer of one rule differ
// only by quantization. OpenMP over chunks above the size threshold.
// p, g, s1: (n); s2: (n) for two-state rules (adam, lamb), else unused.
void rule_update_f32(BlockwiseRule rule, const BlockwiseHyper& h, float* p,
                     const float* g, float* s1, float* s2, int64_t n);
// First pass of LAMB / LARS on f32 states: sum u^2 and sum p^2 of the
// update rule_update_f32 would apply; writes nothing.
BlockwiseNorms rule_norms_f32(BlockwiseRule rule, const BlockwiseHyper& h,
                              const float* p, const float* g, const float* s1,
                              const float* s2, int64_t n);

}  // namespace kbit::cpu
