// Fused optimizer updates: the OpenMP driver and the rules' constructors
// (the math is in optim_update.h).
#include "kernels/cpu/optim_update.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace kbit::cpu {
namespace {

// Below this many elements one thread does the whole update: the fork costs
// more than the loop (about 2^15 elements, as for every kbit loop).
constexpr int64_t kParallelThreshold = int64_t(1) << 15;
// Elements per OpenMP work item: 64 KiB per f32 stream, a few streams fit L2.
constexpr int64_t kChunk = int64_t(1) << 14;

}  // namespace

AdamRule::AdamRule(const AdamHyper& h)
    : beta1_(float(h.beta1)),
      beta2_(float(h.beta2)),
      one_minus_beta1_(float(1.0 - h.beta1)),
      one_minus_beta2_(float(1.0 - h.beta2)),
      eps_(float(h.eps)),
      l2_(h.decoupled ? 0.f : float(h.weight_decay)),
      decay_(h.decoupled ? float(h.lr * h.weight_decay) : 0.f) {
  KBIT_CHECK(h.step >= 1, "[adam_update] expected step >= 1, got ", h.step);
  double bc1 = 1.0 - std::pow(h.beta1, double(h.step));
  double bc2 = 1.0 - std::pow(h.beta2, double(h.step));
  step_size_ = float(h.lr / bc1);
  inv_sqrt_bc2_ = float(1.0 / std::sqrt(bc2));
}

MomentumRule::MomentumRule(const SgdHyper& h)
    : lr_(float(h.lr)),
      momentum_(float(h.momentum)),
      wd_(float(h.weight_decay)),
      nesterov_(h.nesterov) {}

SgdRule::SgdRule(const SgdHyper& h)
    : lr_(float(h.lr)), wd_(float(h.weight_decay)) {}

template <typename Rule>
void fused_update(const Rule& rule, float* p, const float* g,
                  const StatePtrs<Rule>& s, int64_t n) {
  if (n < kParallelThreshold) {
    update_range(rule, p, g, s, 0, n);
    return;
  }
  int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    int64_t begin = c * kChunk;
    update_range(rule, p, g, s, begin, std::min(n, begin + kChunk));
  }
}

template void fused_update(const AdamRule&, float*, const float*,
                           const StatePtrs<AdamRule>&, int64_t);
template void fused_update(const MomentumRule&, float*, const float*,
                           const StatePtrs<MomentumRule>&, int64_t);
template void fused_update(const SgdRule&, float*, const float*,
                           const StatePtrs<SgdRule>&, int64_t);

void adam_update(const AdamHyper& h, float* p, const float* g, float* m,
                 float* v, int64_t n) {
  fused_update(AdamRule(h), p, g, {m, v}, n);
}

void sgd_update(const SgdHyper& h, float* p, const float* g, float* b,
                int64_t n) {
  KBIT_CHECK((b == nullptr) == (h.momentum == 0.0),
             "[sgd_update] expected a momentum buffer exactly when momentum "
             "is not 0, got momentum ",
             h.momentum, " and ", b ? "a buffer" : "no buffer");
  if (b) {
    fused_update(MomentumRule(h), p, g, {b}, n);
  } else {
    fused_update(SgdRule(h), p, g, {}, n);
  }
}

namespace {

using R = BlockwiseRule;

// One element of rule Rl: returns the new p, updates s1 (and s2), and sets
// u to the unscaled update of LAMB / LARS (0 otherwise). The formulas are
// the table of optim_blockwise.h.
template <R Rl>
inline float rule_element(const BlockwiseScalars& k, float p, float g,
                          float& s1, float& s2, float& u) {
  u = 0.0f;
  const float gd = std::fma(k.wd, p, g);
  if constexpr (Rl == R::momentum) {
    s1 = std::fma(k.mu, s1, gd);
    return std::fma(k.neg_lr, s1, p);
  } else if constexpr (Rl == R::nesterov) {
    s1 = std::fma(k.mu, s1, gd);
    return std::fma(k.neg_lr, std::fma(k.mu, s1, gd), p);
  } else if constexpr (Rl == R::lars) {
    s1 = std::fma(k.mu, s1, gd);
    u = s1;
    return std::fma(k.neg_lr_scale, u, p);
  } else if constexpr (Rl == R::rmsprop) {
    s1 = std::fma(k.b1, s1, k.omb1 * (gd * gd));
    return std::fma(k.neg_lr, gd / (std::sqrt(s1) + k.eps), p);
  } else if constexpr (Rl == R::adagrad) {
    s1 = std::fma(gd, gd, s1);
    return std::fma(k.neg_lr, gd / (std::sqrt(s1) + k.eps), p);
  } else if constexpr (Rl == R::lion) {
    const float q = std::fma(k.neg_decay, p, p);
    const float x = std::fma(k.b1, s1, k.omb1 * g);
    const float d = float(x > 0.0f) - float(x < 0.0f);
    s1 = std::fma(k.b2, s1, k.omb2 * g);
    return std::fma(k.neg_lr, d, q);
  } else if constexpr (Rl == R::adam) {
    s1 = std::fma(k.b1, s1, k.omb1 * gd);
    s2 = std::fma(k.b2, s2, k.omb2 * (gd * gd));
    const float den = std::fma(std::sqrt(s2), k.inv_sqrt_c2, k.eps);
    return std::fma(k.neg_step, s1 / den, std::fma(k.neg_decay, p, p));
  } else {  // lamb
    s1 = std::fma(k.b1, s1, k.omb1 * g);
    s2 = std::fma(k.b2, s2, k.omb2 * (g * g));
    const float den = std::fma(std::sqrt(s2), k.inv_sqrt_c2, k.eps);
    u = std::fma(k.lamb_wd, p, k.inv_c1 * (s1 / den));
    return std::fma(k.neg_lr_scale, u, p);
  }
}

template <R Rl>
void rule_range(const BlockwiseScalars& k, float* __restrict p,
                const float* __restrict g, float* __restrict s1,
                float* __restrict s2, int64_t begin, int64_t end) {
  constexpr bool two = Rl == R::adam || Rl == R::lamb;
  for (int64_t i = begin; i < end; ++i) {
    float a = s1[i], b = two ? s2[i] : 0.0f, u;
    p[i] = rule_element<Rl>(k, p[i], g[i], a, b, u);
    s1[i] = a;
    if constexpr (two) s2[i] = b;
  }
}

template <R Rl>
void rule_all(const BlockwiseScalars& k, float* p, const float* g, float* s1,
              float* s2, int64_t n) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n >= kParallelThreshold)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kChunk;
    rule_range<Rl>(k, p, g, s1, s2, begin, std::min(n, begin + kChunk));
  }
}

template <R Rl>
BlockwiseNorms norms_all(const BlockwiseScalars& k, const float* p,
                         const float* g, const float* s1, const float* s2,
                         int64_t n) {
  constexpr bool two = Rl == R::adam || Rl == R::lamb;
  double usq = 0, psq = 0;
#pragma omp parallel for reduction(+ : usq, psq) if (n >= kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) {
    float a = s1[i], b = two ? s2[i] : 0.0f, u;
    rule_element<Rl>(k, p[i], g[i], a, b, u);
    usq += double(u) * u;
    psq += double(p[i]) * p[i];
  }
  return {usq, psq};
}

}  // namespace

void rule_update_f32(BlockwiseRule rule, const BlockwiseHyper& h, float* p,
                     const float* g, float* s1, float* s2, int64_t n) {
  KBIT_CHECK(n == 0 || (p && g && s1), "[rule_update_f32] expected p, g and ",
             "s1, got null");
  KBIT_CHECK(n == 0 || blockwise_num_states(rule) == 1 || s2,
             "[rule_update_f32] expected s2 for ", blockwise_rule_name(rule));
  const BlockwiseScalars k = blockwise_scalars(rule, h);
  switch (rule) {
    case R::momentum:
      return rule_all<R::momentum>(k, p, g, s1, s2, n);
    case R::nesterov:
      return rule_all<R::nesterov>(k, p, g, s1, s2, n);
    case R::lars:
      return rule_all<R::lars>(k, p, g, s1, s2, n);
    case R::rmsprop:
      return rule_all<R::rmsprop>(k, p, g, s1, s2, n);
    case R::adagrad:
      return rule_all<R::adagrad>(k, p, g, s1, s2, n);
    case R::lion:
      return rule_all<R::lion>(k, p, g, s1, s2, n);
    case R::adam:
      return rule_all<R::adam>(k, p, g, s1, s2, n);
    case R::lamb:
      return rule_all<R::lamb>(k, p, g, s1, s2, n);
  }
}

BlockwiseNorms rule_norms_f32(BlockwiseRule rule, const BlockwiseHyper& h,
                              const float* p, const float* g, const float* s1,
                              const float* s2, int64_t n) {
  KBIT_CHECK(rule == R::lamb || rule == R::lars,
             "[rule_norms_f32] expected lamb or lars, got ",
             blockwise_rule_name(rule));
  const BlockwiseScalars k = blockwise_scalars(rule, h);
  if (rule == R::lamb) return norms_all<R::lamb>(k, p, g, s1, s2, n);
  return norms_all<R::lars>(k, p, g, s1, s2, n);
}

}  // namespace kbit::cpu
